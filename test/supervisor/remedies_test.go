package supervisor_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	event "github.com/lodis/lodis/internal/events"
	"github.com/lodis/lodis/internal/statusapi"
	"github.com/lodis/lodis/internal/systemd"

	"github.com/lodis/lodis/internal/testenv"
)

// A worker killed with SIGKILL: the supervisor records the failure and
// resets the unit; the port answers again within 1 s of the kill.
func TestKillWorker(t *testing.T) {
	const port = 18200
	ctx := context.Background()
	enable(t, port, "")
	pid, err := health(port, 5*time.Second)
	if err != nil {
		t.Fatalf("port %d does not answer: %v", port, err)
	}
	after := lastSeq(t)
	if _, err := m.Output(ctx, "kill", "-9", strconv.Itoa(pid)); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	var newPID int
	err = testenv.WaitFor(ctx, time.Second, func() (bool, string) {
		p, err := health(port, 900*time.Millisecond)
		newPID = p
		return err == nil && p != pid, fmt.Sprintf("pid %d, err %v", p, err)
	})
	if err != nil {
		t.Fatalf("port %d did not answer within 1 s of the kill: %v", port, err)
	}
	t.Logf("answered by pid %d %s after the kill", newPID, time.Since(killed).Round(time.Millisecond))
	unit := systemd.ServiceUnit(strconv.Itoa(port))
	waitEvent(t, port, after, 3*time.Second, "failure event", func(e event.Event) bool {
		return e.Kind == event.KindState && e.Unit == unit && e.To == "failed/failed" && e.Result == "signal"
	})
	waitEvent(t, port, after, 3*time.Second, "reset-failed remedy", func(e event.Event) bool {
		return e.Kind == event.KindRemedy && e.Action == "reset-failed" && e.Result == "done"
	})
	s, err := statusJSON(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if in, _ := instance(s, port); in.Restarts < 1 {
		t.Errorf("lodis status shows %d restarts for port %d after a kill, want ≥ 1", in.Restarts, port)
	}
	if st := m.State(ctx, unit); st == "failed/failed" {
		t.Errorf("%s still failed after the supervisor's reset", unit)
	}
}

// A restart storm against deliberately low start limits fails the socket
// (service-start-limit-hit): the supervisor resets and restarts it and the
// port answers again within 2 s.
func TestFailedSocketRecovered(t *testing.T) {
	const port = 18210
	ctx := context.Background()
	enable(t, port, "[Unit]\nStartLimitIntervalSec=60s\nStartLimitBurst=3\n")
	if _, err := health(port, 5*time.Second); err != nil {
		t.Fatalf("port %d does not answer: %v", port, err)
	}
	after := lastSeq(t)
	svc, sock := systemd.ServiceUnit(strconv.Itoa(port)), systemd.SocketUnit(strconv.Itoa(port))
	var stormEnd time.Time
	for i := 0; i < 10; i++ {
		if _, err := m.Systemctl(ctx, "restart", svc); err != nil {
			stormEnd = time.Now()
			if !strings.Contains(err.Error(), "too often") {
				t.Fatalf("restart %d failed, but not on the start limit: %v", i+1, err)
			}
			break
		}
	}
	if stormEnd.IsZero() {
		t.Fatal("10 restarts did not hit StartLimitBurst=3")
	}
	err := testenv.WaitFor(ctx, 2*time.Second, func() (bool, string) {
		_, err := health(port, time.Second)
		return err == nil, fmt.Sprint(err)
	})
	if err != nil {
		t.Fatalf("port %d did not answer within 2 s of its socket failing: %v", port, err)
	}
	t.Logf("port answered %s after the socket failed", time.Since(stormEnd).Round(time.Millisecond))
	waitEvent(t, port, after, 2*time.Second, "socket failure event", func(e event.Event) bool {
		return e.Unit == sock && e.To == "failed/failed" && e.Result == "service-start-limit-hit"
	})
	waitEvent(t, port, after, 2*time.Second, "recover-socket remedy", func(e event.Event) bool {
		return e.Kind == event.KindRemedy && e.Action == "recover-socket" && e.Result == "done"
	})
	if st := m.State(ctx, sock); !strings.HasPrefix(st, "active/") {
		t.Errorf("%s is %s after recovery, want active", sock, st)
	}
}

// A worker whose /__/health hangs (but is alive) is restarted after 3 failed
// probes in a row.
func TestHungWorkerRestarted(t *testing.T) {
	const port = 18220
	ctx := context.Background()
	enable(t, port, "[Service]\nExecStart=\nExecStart=/usr/bin/lodis exec-app -- serve --port %i --test-hang-health\n")
	after := lastSeq(t)
	if _, err := testenv.Client.Get(fmt.Sprintf("http://127.0.0.1:%d/", port)); err != nil {
		t.Fatalf("port %d does not answer /: %v", port, err)
	}
	svc := systemd.ServiceUnit(strconv.Itoa(port))
	pid := m.MainPID(ctx, svc)
	if pid == 0 {
		t.Fatalf("%s has no main pid after a request", svc)
	}
	start := time.Now()
	waitEvent(t, port, after, 10*time.Second, "probe 3 of 3 failing", func(e event.Event) bool {
		return e.Kind == event.KindProbe && strings.HasPrefix(e.Message, "health probe 3 of 3 failed")
	})
	r := waitEvent(t, port, after, 20*time.Second, "restart remedy", func(e event.Event) bool {
		return e.Kind == event.KindRemedy && e.Action == "restart"
	})
	if r.Result != "done" {
		t.Fatalf("restart of the hung worker: %s: %s", r.Result, r.Message)
	}
	t.Logf("hung worker restarted %s after it started", time.Since(start).Round(time.Millisecond))
	if np := m.MainPID(ctx, svc); np == pid || np == 0 {
		t.Errorf("after the restart %s has main pid %d, was %d: want a new process", svc, np, pid)
	}
	// Stop the next hung worker from being restarted while the test cleans up.
	m.Systemctl(ctx, "stop", systemd.SocketUnit(strconv.Itoa(port)))
}

// systemctl stop of a socket by hand is respected: it stays stopped and the
// supervisor takes no remedy.
func TestAdminStopRespected(t *testing.T) {
	const port = 18230
	ctx := context.Background()
	enable(t, port, "")
	if _, err := health(port, 5*time.Second); err != nil {
		t.Fatalf("port %d does not answer: %v", port, err)
	}
	after := lastSeq(t)
	sock := systemd.SocketUnit(strconv.Itoa(port))
	if _, err := m.Systemctl(ctx, "stop", sock); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, port, after, 3*time.Second, "stop event", func(e event.Event) bool {
		return e.Unit == sock && e.To == "inactive/dead"
	})
	// Several probe intervals and backoff steps: time for any wrong remedy.
	time.Sleep(3 * time.Second)
	if st := m.State(ctx, sock); st != "inactive/dead" {
		t.Errorf("%s is %s 3 s after systemctl stop, want inactive/dead", sock, st)
	}
	if !refuses(port) {
		t.Errorf("port %d accepts connections after systemctl stop of its socket", port)
	}
	for _, e := range events(t, port, after) {
		if e.Kind == event.KindRemedy {
			t.Errorf("remedy after an administrator's stop: %s", describe([]event.Event{e}))
		}
	}
	s, _ := statusJSON(ctx)
	if in, ok := instance(s, port); !ok || in.Socket != "inactive/dead" {
		t.Errorf("lodis status shows port %d as %+v, want socket inactive/dead", port, in)
	}
}

// The supervisor killed with SIGKILL: systemd restarts it, the workers keep
// running, and the new supervisor rebuilds its view of every instance.
func TestSupervisorKilled(t *testing.T) {
	const a, b = 18240, 18241
	ctx := context.Background()
	enable(t, a, "")
	enable(t, b, "")
	wpid, err := health(a, 5*time.Second)
	if err != nil {
		t.Fatalf("port %d does not answer: %v", a, err)
	}
	sup := m.MainPID(ctx, "lodis-supervisor.service")
	if _, err := m.Output(ctx, "kill", "-9", strconv.Itoa(sup)); err != nil {
		t.Fatal(err)
	}
	var s statusapi.Snapshot
	err = testenv.WaitFor(ctx, 10*time.Second, func() (bool, string) {
		var err error
		s, err = statusJSON(ctx)
		if err != nil {
			return false, err.Error()
		}
		ia, oka := instance(s, a)
		_, okb := instance(s, b)
		return s.PID != sup && s.Connected && oka && okb && ia.PID != 0,
			fmt.Sprintf("supervisor pid %d (was %d), connected %v, instances %+v", s.PID, sup, s.Connected, s.Instances)
	})
	if err != nil {
		t.Fatalf("no new supervisor with the full view: %v", err)
	}
	if n := m.Prop(ctx, "lodis-supervisor.service", "NRestarts"); n == "0" {
		t.Errorf("NRestarts of lodis-supervisor.service is 0 after a kill")
	}
	if ia, _ := instance(s, a); int(ia.PID) != wpid {
		t.Errorf("worker on %d has pid %d after the supervisor restart, was %d: workers must be unaffected", a, ia.PID, wpid)
	}
	if p, err := health(a, 2*time.Second); err != nil || p != wpid {
		t.Errorf("port %d answered by pid %d (err %v), want the same worker %d", a, p, err, wpid)
	}
}

// A port enabled while the supervisor runs shows up in lodis status within
// 2 s, without restarting the supervisor.
func TestNewPortAppears(t *testing.T) {
	const port = 18250
	ctx := context.Background()
	sup := m.MainPID(ctx, "lodis-supervisor.service")
	start := time.Now()
	enable(t, port, "")
	err := testenv.WaitFor(ctx, 2*time.Second, func() (bool, string) {
		out, err := m.Output(ctx, "lodis", "status")
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); err == nil && len(f) > 2 && f[0] == strconv.Itoa(port) && f[1] == "active/listening" {
				return true, ""
			}
		}
		return false, out
	})
	if err != nil {
		t.Fatalf("port %d not in lodis status within 2 s: %v", port, err)
	}
	t.Logf("appeared %s after enable --now was called", time.Since(start).Round(time.Millisecond))
	if now := m.MainPID(ctx, "lodis-supervisor.service"); now != sup {
		t.Errorf("supervisor pid changed from %d to %d", sup, now)
	}
}
