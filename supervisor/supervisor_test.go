package supervisor

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lodis/lodis/internal/events"
	"github.com/lodis/lodis/internal/systemd"
)

func socketState(port, active, sub, result string) systemd.UnitState {
	return systemd.UnitState{Name: systemd.SocketUnit(port), LoadState: "loaded", ActiveState: active, SubState: sub, Result: result}
}

func serviceState(port, active, sub, result string, pid uint32) systemd.UnitState {
	return systemd.UnitState{Name: systemd.ServiceUnit(port), LoadState: "loaded", ActiveState: active, SubState: sub, Result: result, MainPID: pid}
}

func TestFailedSocketAtStartIsRecovered(t *testing.T) {
	f := newFake(socketState("8080", "failed", "failed", "trigger-limit-hit"), serviceState("8080", "inactive", "dead", "success", 0))
	h := startHarness(t, Options{}, f)
	h.waitFor("recover-socket remedy", func() bool {
		_, ok := h.find(func(e events.Event) bool { return e.Action == "recover-socket" && e.Result == "done" })
		return ok
	})
	// Failed by its trigger limit: the worker is started directly too.
	want := []string{"reset-failed lodis@8080.service", "reset-failed lodis@8080.socket", "start lodis@8080.socket", "start lodis@8080.service"}
	if got := f.Calls(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("calls %v, want %v", got, want)
	}
}

func TestAdminStopIsLeftAlone(t *testing.T) {
	f := newFake(socketState("8081", "active", "listening", "success"))
	h := startHarness(t, Options{}, f)
	h.waitFor("watching", func() bool {
		_, ok := h.find(func(e events.Event) bool { return e.Message == "watching lodis@8081.socket" })
		return ok
	})
	f.signal(propsSignal(systemd.SocketUnit("8081"), "org.freedesktop.systemd1.Socket", map[string]any{"Result": "success"}))
	f.signal(unitSignal(systemd.SocketUnit("8081"), "inactive", "dead"))
	h.waitFor("stop event", func() bool {
		_, ok := h.find(func(e events.Event) bool {
			return e.To == "inactive/dead" && strings.Contains(e.Message, "left stopped")
		})
		return ok
	})
	time.Sleep(100 * time.Millisecond)
	if c := f.Calls(); len(c) != 0 {
		t.Errorf("supervisor acted on an administrator's stop: %v", c)
	}
}

func TestCrashedWorkerIsResetWithBackoff(t *testing.T) {
	f := newFake(socketState("8082", "active", "listening", "success"), serviceState("8082", "active", "running", "success", 42))
	h := startHarness(t, Options{}, f)
	h.waitFor("watching", func() bool { _, ok := h.find(func(e events.Event) bool { return e.Instance == "8082" }); return ok })
	crash := func(pid uint32) {
		f.signal(propsSignal(systemd.ServiceUnit("8082"), "org.freedesktop.systemd1.Service", map[string]any{"Result": "signal", "MainPID": uint32(0)}))
		f.signal(unitSignal(systemd.ServiceUnit("8082"), "failed", "failed"))
	}
	crash(42)
	h.waitFor("first reset", func() bool { return contains(f.Calls(), "reset-failed lodis@8082.service") })
	e, _ := h.find(func(e events.Event) bool { return e.To == "failed/failed" })
	if e.From != "active/running" || e.Result != "signal" {
		t.Errorf("failure event %+v, want from active/running, result signal", e)
	}
	// The second crash of a streak waits 1 s: no call right away.
	f.signal(propsSignal(systemd.ServiceUnit("8082"), "org.freedesktop.systemd1.Service", map[string]any{"Result": "success", "MainPID": uint32(43)}))
	f.signal(unitSignal(systemd.ServiceUnit("8082"), "active", "running"))
	crash(43)
	time.Sleep(300 * time.Millisecond)
	if n := len(f.Calls()); n != 1 {
		t.Errorf("%d calls 300 ms after a second crash, want 1 (backoff)", n)
	}
	h.waitFor("second reset after backoff", func() bool { return len(f.Calls()) == 2 })
	snap, _ := h.sup.Snapshot(context.Background())
	if len(snap.Instances) != 1 || snap.Instances[0].Restarts != 2 {
		t.Errorf("snapshot %+v, want one instance with 2 restarts", snap.Instances)
	}
}

func TestHungWorkerIsRestarted(t *testing.T) {
	var hang atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hang.Load() {
			<-r.Context().Done()
			return
		}
		fmt.Fprint(w, `{"pid":7,"version":"v9","requests":1,"open_conns":1}`)
	}))
	defer srv.Close()
	f := newFake(socketState("8083", "active", "running", "success"), serviceState("8083", "active", "running", "success", 7))
	f.listen[systemd.SocketUnit("8083")] = srv.Listener.Addr().String()
	// The timeout is short enough for a quick test and long enough that a
	// busy machine does not fail the healthy probes.
	h := startHarness(t, Options{ProbeInterval: 50 * time.Millisecond, ProbeTimeout: 300 * time.Millisecond, ProbeFailures: 3}, f)
	h.waitFor("a healthy probe", func() bool {
		s, _ := h.sup.Snapshot(context.Background())
		return len(s.Instances) == 1 && s.Instances[0].Health != nil && s.Instances[0].Health.OK && s.Instances[0].Version == "v9"
	})
	if c := f.Calls(); len(c) != 0 {
		t.Fatalf("calls for a healthy worker: %v", c)
	}
	var before uint64
	if evs := h.events.Since(0); len(evs) > 0 {
		before = evs[len(evs)-1].Seq
	}
	hang.Store(true)
	// The quiet worker is not probed again unless it served traffic: mark
	// it busy by a new process id, then let it hang.
	f.signal(propsSignal(systemd.ServiceUnit("8083"), "org.freedesktop.systemd1.Service", map[string]any{"MainPID": uint32(8)}))
	f.signal(unitSignal(systemd.ServiceUnit("8083"), "active", "running"))
	h.waitFor("restart", func() bool { return contains(f.Calls(), "restart lodis@8083.service") })
	fails := 0
	for _, e := range h.events.Since(before) {
		if e.Kind == events.KindProbe && e.Result == "failed" {
			fails++
		}
	}
	if fails != 2 { // the first failure and the one that reached the limit
		t.Errorf("%d probe-failure events, want 2:%s", fails, h.describe())
	}
}

// A worker that starts is probed when systemd says it runs, not at the next
// probe round: its version shows in the status at once.
func TestNewWorkerIsProbedAtOnce(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"pid":21,"version":"v2","requests":1,"open_conns":1}`)
	}))
	defer srv.Close()
	f := newFake(socketState("8086", "active", "listening", "success"), serviceState("8086", "inactive", "dead", "success", 0))
	f.listen[systemd.SocketUnit("8086")] = srv.Listener.Addr().String()
	h := startHarness(t, Options{ProbeInterval: time.Hour, ProbeTimeout: time.Hour}, f)
	h.waitFor("connected", func() bool { s, _ := h.sup.Snapshot(context.Background()); return s.Connected })
	f.signal(propsSignal(systemd.ServiceUnit("8086"), "org.freedesktop.systemd1.Service", map[string]any{"MainPID": uint32(21)}))
	f.signal(unitSignal(systemd.ServiceUnit("8086"), "active", "running"))
	h.waitFor("the new worker's version", func() bool {
		s, _ := h.sup.Snapshot(context.Background())
		return len(s.Instances) == 1 && s.Instances[0].Version == "v2" && s.Instances[0].Health != nil && s.Instances[0].Health.OK
	})
}

func TestQuietWorkerIsNotProbedAgain(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := hits.Add(1)
		fmt.Fprintf(w, `{"pid":7,"requests":%d,"open_conns":1}`, n)
	}))
	defer srv.Close()
	f := newFake(socketState("8084", "active", "running", "success"), serviceState("8084", "active", "running", "success", 7))
	f.listen[systemd.SocketUnit("8084")] = srv.Listener.Addr().String()
	startHarness(t, Options{ProbeInterval: 20 * time.Millisecond, ProbeTimeout: 2 * time.Second}, f)
	time.Sleep(400 * time.Millisecond)
	// Probe 1 (new pid) and probe 2 (first saw requests=1 only… the
	// worker's only traffic is the probes, so probing stops).
	if n := hits.Load(); n < 1 || n > 2 {
		t.Errorf("a quiet worker was probed %d times in 20 intervals, want 1 or 2 (so it can exit when idle)", n)
	}
}

func TestBusLossReconnects(t *testing.T) {
	f1 := newFake(socketState("8085", "active", "listening", "success"))
	f2 := newFake(socketState("8085", "failed", "failed", "resources"))
	h := startHarness(t, Options{}, f1, f2)
	h.waitFor("first connection", func() bool { s, _ := h.sup.Snapshot(context.Background()); return s.Connected && len(s.Instances) == 1 })
	close(f1.sigs) // the bus goes away
	h.waitFor("reconnection and recovery of what failed meanwhile", func() bool {
		return contains(f2.Calls(), "start lodis@8085.socket")
	})
	lost, _ := h.find(func(e events.Event) bool { return e.Kind == events.KindSupervisor && e.Result == "lost" })
	back, _ := h.find(func(e events.Event) bool {
		return e.Kind == events.KindSupervisor && e.Result == "done" && strings.Contains(e.Message, "after an outage")
	})
	if lost.Seq == 0 || back.Seq <= lost.Seq {
		t.Errorf("want a lost event then a reconnect event:%s", h.describe())
	}
}

func TestUnreachableBusKeepsRunning(t *testing.T) {
	h := startHarness(t, Options{})
	h.waitFor("a failed connect event", func() bool {
		_, ok := h.find(func(e events.Event) bool { return e.Action == "connect" && e.Result == "failed" })
		return ok
	})
	s, ok := h.sup.Snapshot(context.Background())
	if !ok || s.Connected {
		t.Errorf("snapshot %+v ok %v, want a disconnected answer", s, ok)
	}
	if h.sup.Units(context.Background()) != nil {
		t.Error("Units returned a connection while the bus is unreachable")
	}
}

func TestNewUnitIsWatched(t *testing.T) {
	f := newFake()
	h := startHarness(t, Options{}, f)
	h.waitFor("connection", func() bool { s, _ := h.sup.Snapshot(context.Background()); return s.Connected })
	f.mu.Lock()
	f.units = append(f.units, socketState("9090", "active", "listening", "success"))
	f.mu.Unlock()
	f.sigs <- systemd.UnitChange{Unit: systemd.SocketUnit("9090"), New: true}
	h.waitFor("the new port", func() bool {
		s, _ := h.sup.Snapshot(context.Background())
		return len(s.Instances) == 1 && s.Instances[0].Port == "9090" && s.Instances[0].Socket == "active/listening"
	})
}

// TestHeldWorkersAreNotMended: while a roll-out holds the worker remedies,
// a hung worker is not restarted and a failed one is not reset, but a
// failed socket is recovered; once resumed, the failed worker is reset and
// probe failures are counted afresh.
func TestHeldWorkersAreNotMended(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"status":"unhealthy"}`, http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"pid":9,"version":"v1","requests":1,"open_conns":1}`)
	}))
	defer ok.Close()
	f := newFake(socketState("8084", "active", "running", "success"), serviceState("8084", "active", "running", "success", 7),
		socketState("8085", "active", "running", "success"), serviceState("8085", "active", "running", "success", 9))
	f.listen[systemd.SocketUnit("8084")] = srv.Listener.Addr().String()
	f.listen[systemd.SocketUnit("8085")] = ok.Listener.Addr().String()
	// Probes of 8084 fail at once (503); a long timeout keeps a busy machine
	// from failing those of 8085.
	h := startHarness(t, Options{ProbeInterval: 20 * time.Millisecond, ProbeTimeout: 2 * time.Second, ProbeFailures: 2}, f)
	h.waitFor("connected", func() bool { s, _ := h.sup.Snapshot(context.Background()); return s.Connected })
	resume := h.sup.HoldWorkers(context.Background(), "roll-out R")

	h.waitFor("held restart", func() bool {
		_, ok := h.find(func(e events.Event) bool { return e.Action == "restart" && e.Result == "held" && e.Instance == "8084" })
		return ok
	})
	f.signal(propsSignal(systemd.ServiceUnit("8085"), "org.freedesktop.systemd1.Service", map[string]any{"Result": "signal", "MainPID": uint32(0)}))
	f.signal(unitSignal(systemd.ServiceUnit("8085"), "failed", "failed"))
	h.waitFor("held reset", func() bool {
		_, ok := h.find(func(e events.Event) bool {
			return e.Action == "reset-failed" && e.Result == "held" && e.Instance == "8085"
		})
		return ok
	})
	f.signal(propsSignal(systemd.SocketUnit("8085"), "org.freedesktop.systemd1.Socket", map[string]any{"Result": "trigger-limit-hit"}))
	f.signal(unitSignal(systemd.SocketUnit("8085"), "failed", "failed"))
	h.waitFor("socket recovered during the hold", func() bool { return contains(f.Calls(), "start lodis@8085.socket") })
	time.Sleep(150 * time.Millisecond) // several probe rounds
	// Only the socket's recovery acted (it resets its service too and,
	// after a trigger limit, starts it).
	want := []string{"reset-failed lodis@8085.service", "reset-failed lodis@8085.socket", "start lodis@8085.socket", "start lodis@8085.service"}
	if got := f.Calls(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("calls during the hold %v, want only the socket's recovery %v", got, want)
	}
	held := 0
	for _, e := range h.events.Since(0) {
		if e.Result == "held" {
			held++
		}
	}
	if held != 2 {
		t.Errorf("%d held events, want one per instance and remedy (2):%s", held, h.describe())
	}

	// The socket listens again; its worker is still failed when the hold
	// ends.
	f.signal(unitSignal(systemd.SocketUnit("8085"), "active", "listening"))
	time.Sleep(50 * time.Millisecond)
	n := len(f.Calls())
	resume()
	h.waitFor("resume event", func() bool {
		_, ok := h.find(func(e events.Event) bool { return e.Action == "resume" })
		return ok
	})
	h.waitFor("failed worker reset after the hold", func() bool {
		for _, c := range f.Calls()[n:] {
			if c == "reset-failed lodis@8085.service" {
				return true
			}
		}
		return false
	})
	// The hung worker is restarted only after ProbeFailures new failures.
	h.waitFor("hung worker restarted after the hold", func() bool { return contains(f.Calls(), "restart lodis@8084.service") })
}

// TestHeldAltWorkerResetAfterTheHold: an alternate worker that failed while
// a roll-out held the remedies is reset once the hold ends, as the port's
// own worker is.
func TestHeldAltWorkerResetAfterTheHold(t *testing.T) {
	f := newFake(socketState("8086", "active", "listening", "success"), serviceState("8086", "inactive", "dead", "success", 0))
	h := startHarness(t, Options{ProbeInterval: 20 * time.Millisecond}, f)
	h.waitFor("connected", func() bool { s, _ := h.sup.Snapshot(context.Background()); return s.Connected })
	resume := h.sup.HoldWorkers(context.Background(), "roll-out R")
	alt := systemd.AltUnit("8086")
	f.signal(propsSignal(alt, "org.freedesktop.systemd1.Service", map[string]any{"Result": "exit-code", "MainPID": uint32(0)}))
	f.signal(unitSignal(alt, "failed", "failed"))
	h.waitFor("held reset of the alternate worker", func() bool {
		_, ok := h.find(func(e events.Event) bool {
			return e.Action == "reset-failed" && e.Result == "held" && e.Instance == "8086"
		})
		return ok
	})
	if contains(f.Calls(), "reset-failed "+alt) {
		t.Fatalf("the alternate worker was reset during the hold: %v", f.Calls())
	}
	resume()
	h.waitFor("alternate worker reset after the hold", func() bool { return contains(f.Calls(), "reset-failed "+alt) })
}
