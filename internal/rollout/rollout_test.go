package rollout

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lodis/lodis/internal/health"
	"github.com/lodis/lodis/internal/systemd"
)

// world is an in-memory machine: sockets, workers, and the current link. A
// restarted or activated worker runs whatever current points at, as systemd
// does with ExecStart=/var/lib/lodis/current.
type world struct {
	mu        sync.Mutex
	current   string
	previous  string
	rejected  map[string]string
	units     map[string]*worker // by unit; a unit listed here has a listening socket
	unhealthy map[string]bool    // releases whose workers answer 503
	failStart map[string]bool    // releases whose start job fails
	crashSoak map[string]bool    // releases whose workers restart once while soaking
	restarts  []string
	ops       []string // starts and stops, in order
	mixes     int      // times two releases served one port after a start
	nextPID   int
	saved     []State
	onRestart func(unit string) // test hook, called before a restart
	onStop    func(unit string) // test hook, called before a stop
}

type worker struct {
	running bool
	sha     string
	pid     int
	probes  int
}

func newWorld(current string, running []string, idle ...string) *world {
	w := &world{current: current, units: map[string]*worker{}, rejected: map[string]string{},
		unhealthy: map[string]bool{}, failStart: map[string]bool{}, crashSoak: map[string]bool{}, nextPID: 100}
	for _, u := range running {
		w.units[u] = &worker{running: true, sha: current, pid: w.pid()}
	}
	for _, u := range idle {
		w.units[u] = &worker{}
	}
	return w
}

func (w *world) pid() int { w.nextPID++; return w.nextPID }

// list returns the port units of the world's sockets; with running, only
// those whose port has a worker.
func (w *world) list(running bool) []string {
	var out []string
	for u := range w.units {
		port, typ, _ := systemd.ParseUnit(u)
		if typ != "service" {
			continue
		}
		if !running || w.runs(u) || w.runs(systemd.AltUnit(port)) {
			out = append(out, u)
		}
	}
	systemd.SortUnits(out)
	return out
}

func (w *world) runs(unit string) bool { wk := w.units[unit]; return wk != nil && wk.running }

func (w *world) Running(context.Context) ([]string, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.list(true), nil
}

func (w *world) Listening(context.Context) ([]string, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.list(false), nil
}

func (w *world) Workers(_ context.Context, u string) ([]string, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	port := systemd.PortOf(u)
	var out []string
	for _, unit := range []string{systemd.ServiceUnit(port), systemd.AltUnit(port)} {
		if w.runs(unit) {
			out = append(out, unit)
		}
	}
	return out, nil
}

func (w *world) Restart(_ context.Context, u string) error {
	if w.onRestart != nil {
		w.onRestart(u)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.restarts = append(w.restarts, u)
	wk := w.units[u]
	if wk == nil || !wk.running {
		return nil // try-restart of an idle unit does nothing
	}
	if w.failStart[w.current] {
		wk.running = false
		return errors.New("restart job failed")
	}
	wk.sha, wk.pid, wk.probes = w.current, w.pid(), 0
	return nil
}

func (w *world) Start(_ context.Context, u string) error {
	if w.onRestart != nil {
		w.onRestart(u)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.ops = append(w.ops, "start "+u)
	if w.failStart[w.current] {
		return errors.New("start job failed")
	}
	wk := w.units[u]
	if wk == nil {
		wk = &worker{}
		w.units[u] = wk
	}
	if !wk.running {
		wk.running, wk.sha, wk.pid, wk.probes = true, w.current, w.pid(), 0
	}
	w.checkMix()
	return nil
}

func (w *world) Stop(_ context.Context, u string) error {
	if w.onStop != nil {
		w.onStop(u)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.ops = append(w.ops, "stop "+u)
	if wk := w.units[u]; wk != nil {
		wk.running = false
	}
	return nil
}

// checkMix counts the ports on which workers of two releases run at once.
func (w *world) checkMix() {
	for _, u := range w.list(true) {
		a, b := w.units[u], w.units[systemd.AltUnit(systemd.PortOf(u))]
		if a != nil && b != nil && a.running && b.running && a.sha != b.sha {
			w.mixes++
		}
	}
}

func (w *world) Check(_ context.Context, u string) (Worker, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	wk := w.units[u]
	port, typ, _ := systemd.ParseUnit(u)
	if wk == nil || (!wk.running && typ == "alt") {
		return Worker{}, errors.New("connection refused")
	}
	if !wk.running {
		if w.runs(systemd.AltUnit(port)) {
			return Worker{}, errors.New("answered by the other worker of the port")
		}
		// socket activation
		if w.failStart[w.current] {
			return Worker{}, errors.New("connection reset by peer")
		}
		wk.running, wk.sha, wk.pid, wk.probes = true, w.current, w.pid(), 0
	}
	wk.probes++
	if w.unhealthy[wk.sha] {
		return Worker{}, &health.StatusError{Status: "503 Service Unavailable", Body: `{"status":"unhealthy"}`}
	}
	if w.crashSoak[wk.sha] && wk.probes == 4 {
		wk.pid = w.pid() // crashed and was activated again
	}
	return Worker{Release: wk.sha, PID: uint32(wk.pid)}, nil
}

func (w *world) Activate(sha string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.current = sha
	return nil
}

func (w *world) SetPrevious(sha string) error { w.previous = sha; return nil }

func (w *world) MarkRejected(sha, reason string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.rejected[sha] = reason
	return nil
}

func (w *world) Save(st *State) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	c := *st
	c.Moved = slices.Clone(st.Moved)
	c.Units = slices.Clone(st.Units)
	w.saved = append(w.saved, c)
	return nil
}

// shas reports the release each running worker serves.
func (w *world) shas() map[string]string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string]string{}
	for u, wk := range w.units {
		if wk.running {
			out[u] = wk.sha
		}
	}
	return out
}

func runner(w *world) *Runner {
	return &Runner{Ops: w, Releases: w, Persist: w, CanarySoak: 60 * time.Millisecond,
		ProbeInterval: 5 * time.Millisecond, HealthTimeout: 500 * time.Millisecond}
}

func units(ports ...int) []string {
	var out []string
	for _, p := range ports {
		out = append(out, fmt.Sprintf("lodis@%d.service", p))
	}
	return out
}

func eventKinds(st *State) []string {
	var k []string
	for _, e := range st.Events {
		k = append(k, e.Kind)
	}
	return k
}

const (
	oldR = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	newR = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

func TestRollout(t *testing.T) {
	for _, tc := range []struct {
		name         string
		running      []string
		idle         []string
		setup        func(w *world)
		wantPhase    Phase
		wantOn       string   // release every running worker must end on
		wantRestarts []string // in order
		wantReason   string   // substring, for rollbacks
	}{
		{name: "three running workers move one at a time, canary first",
			running: units(8082, 8080, 8081), idle: units(8083),
			wantPhase: PhaseDone, wantOn: newR, wantRestarts: units(8080, 8081, 8082)},
		{name: "canary unhealthy: rolled back, nobody else touched",
			running: units(8080, 8081, 8082), setup: func(w *world) { w.unhealthy[newR] = true },
			wantPhase: PhaseRolledBack, wantOn: oldR, wantRestarts: units(8080, 8080), wantReason: "503"},
		{name: "start job fails on the canary",
			running: units(8080, 8081), setup: func(w *world) { w.failStart[newR] = true },
			// The failed unit needs no restart to go back: its socket starts the old release.
			wantPhase: PhaseRolledBack, wantOn: oldR, wantRestarts: units(8080), wantReason: "job failed"},
		{name: "canary restarts during its soak",
			running: units(8080, 8081), setup: func(w *world) { w.crashSoak[newR] = true },
			wantPhase: PhaseRolledBack, wantOn: oldR, wantRestarts: units(8080, 8080), wantReason: "restarted during the soak"},
		{name: "the second worker fails: the canary goes back too",
			running: units(8080, 8081, 8082), setup: func(w *world) {
				w.onRestart = func(u string) {
					if systemd.PortOf(u) == "8081" && w.current == newR {
						w.mu.Lock()
						w.unhealthy[newR] = true
						w.mu.Unlock()
					}
				}
			},
			wantPhase: PhaseRolledBack, wantOn: oldR, wantRestarts: units(8080, 8081, 8081, 8080), wantReason: "@8081.service"},
		{name: "nothing running: the first socket is activated as the canary",
			idle:      units(8080, 8081),
			wantPhase: PhaseDone, wantOn: newR, wantRestarts: nil},
		{name: "nothing running, canary unhealthy",
			idle: units(8080, 8081), setup: func(w *world) { w.unhealthy[newR] = true },
			// The probe activated the canary on the new release; one restart takes it back.
			wantPhase: PhaseRolledBack, wantOn: oldR, wantRestarts: units(8080), wantReason: "503"},
		{name: "no lodis socket at all: the flip is the whole roll-out",
			wantPhase: PhaseDone, wantOn: newR},
	} {
		for _, overlap := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/overlap=%v", tc.name, overlap), func(t *testing.T) {
				w := newWorld(oldR, tc.running, tc.idle...)
				if tc.setup != nil {
					tc.setup(w)
				}
				st := NewState(KindUpgrade, oldR, newR, time.Now())
				r := runner(w)
				r.Overlap = overlap
				err := r.Run(context.Background(), st)
				if st.Phase != tc.wantPhase {
					t.Fatalf("phase %s (err %v), want %s; events %v", st.Phase, err, tc.wantPhase, eventKinds(st))
				}
				if w.current != tc.wantOn {
					t.Fatalf("current = %.8s, want %.8s", w.current, tc.wantOn)
				}
				for u, sha := range w.shas() {
					if sha != tc.wantOn {
						t.Errorf("%s runs %.8s, want %.8s: a mix left behind", u, sha, tc.wantOn)
					}
				}
				if overlap {
					if len(w.restarts) != 0 {
						t.Errorf("restarts %v with overlap", w.restarts)
					}
					for _, u := range w.list(true) {
						if ws, _ := w.Workers(context.Background(), u); len(ws) != 1 {
							t.Errorf("port of %s served by %v at the end", u, ws)
						}
					}
				} else if !slices.Equal(w.restarts, tc.wantRestarts) {
					t.Errorf("restarts %v, want %v", w.restarts, tc.wantRestarts)
				}
				var rb *RolledBackError
				switch tc.wantPhase {
				case PhaseDone:
					if err != nil || w.previous != oldR || len(w.rejected) != 0 {
						t.Errorf("done: err %v, previous %.8s, rejected %v", err, w.previous, w.rejected)
					}
				case PhaseRolledBack:
					if !errors.As(err, &rb) || !strings.Contains(rb.Reason, tc.wantReason) {
						t.Errorf("err = %v, want a rollback because of %q", err, tc.wantReason)
					}
					if !strings.Contains(w.rejected[newR], tc.wantReason) {
						t.Errorf("new release rejected with %q, want %q", w.rejected[newR], tc.wantReason)
					}
				}
				if len(w.saved) == 0 || w.saved[len(w.saved)-1].Phase != tc.wantPhase {
					t.Errorf("the final phase was not persisted")
				}
			})
		}
	}
}

// overlapRunner is runner with Overlap.
func overlapRunner(w *world) *Runner { r := runner(w); r.Overlap = true; return r }

// TestOverlap: each port's other unit starts on the new release beside the
// old worker, which stops only once the new one is healthy; the next
// roll-out moves the port back to its first unit.
func TestOverlap(t *testing.T) {
	w := newWorld(oldR, units(8080, 8081), units(8082)...)
	st := NewState(KindUpgrade, oldR, newR, time.Now())
	if err := overlapRunner(w).Run(context.Background(), st); err != nil {
		t.Fatalf("Run: %v; events %v", err, eventKinds(st))
	}
	want := []string{"start lodis-alt@8080.service", "stop lodis@8080.service", "start lodis-alt@8081.service", "stop lodis@8081.service"}
	if !samePerPort(w.ops, want) {
		t.Errorf("ops %v, want %v (in this order for each port)", w.ops, want)
	}
	if len(w.restarts) != 0 {
		t.Errorf("restarts %v: an overlapping roll-out restarted a worker in place", w.restarts)
	}
	if got := w.shas(); len(got) != 2 || got["lodis-alt@8080.service"] != newR || got["lodis-alt@8081.service"] != newR {
		t.Errorf("running after the roll-out: %v", got)
	}
	w.ops = nil
	back := NewState(KindUpgrade, newR, oldR, time.Now())
	if err := overlapRunner(w).Run(context.Background(), back); err != nil {
		t.Fatalf("second Run: %v", err)
	}
	want = []string{"start lodis@8080.service", "stop lodis-alt@8080.service", "start lodis@8081.service", "stop lodis-alt@8081.service"}
	if !samePerPort(w.ops, want) {
		t.Errorf("second roll-out: ops %v, want %v", w.ops, want)
	}
}

// samePerPort reports whether ops holds the operations of want, in want's
// order for each port (the ports' operations may interleave: an old worker
// drains while the next port starts).
func samePerPort(ops, want []string) bool {
	byPort := func(l []string) map[string][]string {
		m := map[string][]string{}
		for _, op := range l {
			_, unit, _ := strings.Cut(op, " ")
			p := systemd.PortOf(unit)
			m[p] = append(m[p], op)
		}
		return m
	}
	a, b := byPort(ops), byPort(want)
	if len(ops) != len(want) || len(a) != len(b) {
		return false
	}
	for p, l := range b {
		if !slices.Equal(a[p], l) {
			return false
		}
	}
	return true
}

// TestOverlapGoesOnWhileTheOldWorkerDrains: the next port's new worker
// starts while the previous port's old one is still draining, and Run
// returns only once every old worker has stopped.
func TestOverlapGoesOnWhileTheOldWorkerDrains(t *testing.T) {
	w := newWorld(oldR, units(8080, 8081, 8082))
	nextStarted := make(chan struct{})
	w.onRestart = func(u string) {
		if u == "lodis-alt@8082.service" {
			close(nextStarted)
		}
	}
	var waited atomic.Bool
	w.onStop = func(u string) {
		if u != "lodis@8081.service" {
			return
		}
		select {
		case <-nextStarted:
		case <-time.After(5 * time.Second):
			waited.Store(true) // the roll-out waited for this drain
		}
	}
	st := NewState(KindUpgrade, oldR, newR, time.Now())
	if err := overlapRunner(w).Run(context.Background(), st); err != nil {
		t.Fatalf("Run: %v; events %v", err, eventKinds(st))
	}
	if waited.Load() {
		t.Error("port 8082's new worker started only after port 8081's old one had drained")
	}
	got := w.shas()
	for _, p := range []int{8080, 8081, 8082} {
		if sha := got[fmt.Sprintf("lodis-alt@%d.service", p)]; sha != newR {
			t.Errorf("port %d: alt runs %.8s, want the new release", p, sha)
		}
		if _, ok := got[fmt.Sprintf("lodis@%d.service", p)]; ok {
			t.Errorf("port %d: the old worker still runs after Run returned", p)
		}
	}
}

// TestOverlapRollbackStopsOnlyTheNewWorker: a new worker that fails its
// check is stopped; the old one beside it never stopped serving.
func TestOverlapRollbackStopsOnlyTheNewWorker(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(w *world)
		want  []string
	}{
		{"unhealthy", func(w *world) { w.unhealthy[newR] = true },
			[]string{"start lodis-alt@8080.service", "stop lodis-alt@8080.service"}},
		{"start job fails", func(w *world) { w.failStart[newR] = true },
			[]string{"start lodis-alt@8080.service", "stop lodis-alt@8080.service"}},
		{"crash during the soak", func(w *world) { w.crashSoak[newR] = true },
			// moved, then the soak failed: the old unit takes the port back the same way
			[]string{"start lodis-alt@8080.service", "stop lodis@8080.service", "start lodis@8080.service", "stop lodis-alt@8080.service"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(oldR, units(8080, 8081))
			tc.setup(w)
			st := NewState(KindUpgrade, oldR, newR, time.Now())
			err := overlapRunner(w).Run(context.Background(), st)
			var rb *RolledBackError
			if !errors.As(err, &rb) || st.Phase != PhaseRolledBack {
				t.Fatalf("Run = %v, phase %s; want rolled back", err, st.Phase)
			}
			if !slices.Equal(w.ops, tc.want) {
				t.Errorf("ops %v, want %v", w.ops, tc.want)
			}
			for u, sha := range w.shas() {
				if sha != oldR {
					t.Errorf("%s runs %.8s after the rollback", u, sha)
				}
			}
			if !w.runs("lodis@8081.service") || w.units["lodis@8081.service"].pid != 102 {
				t.Errorf("lodis@8081.service was touched")
			}
		})
	}
}

// TestOverlapResume: a driver killed while both units of a port ran leaves
// one release per port after the next driver.
func TestOverlapResume(t *testing.T) {
	for _, passed := range []bool{false, true} {
		w := newWorld(newR, units(8080, 8081))
		w.units["lodis@8080.service"].sha = oldR
		w.units["lodis@8081.service"].sha = oldR
		w.units["lodis-alt@8080.service"] = &worker{running: true, sha: newR, pid: w.pid()}
		st := NewState(KindUpgrade, oldR, newR, time.Now())
		st.Phase, st.CanaryPassed, st.Units, st.Current = PhaseRolling, passed, units(8080, 8081), "lodis@8080.service"
		overlapRunner(w).Run(context.Background(), st)
		want := map[bool]string{false: oldR, true: newR}[passed]
		for _, p := range []string{"8080", "8081"} {
			ws, _ := w.Workers(context.Background(), systemd.ServiceUnit(p))
			if len(ws) != 1 || w.units[ws[0]].sha != want {
				t.Errorf("canary passed %v: port %s served by %v, want one worker on %.8s", passed, p, ws, want)
			}
		}
	}
}

func TestRolloutAlreadyOnTheNewRelease(t *testing.T) {
	w := newWorld(oldR, units(8080, 8081))
	w.units["lodis@8081.service"].sha = newR
	st := NewState(KindUpgrade, oldR, newR, time.Now())
	if err := runner(w).Run(context.Background(), st); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(w.restarts, units(8080)) {
		t.Fatalf("restarts %v: a worker already on the new release was restarted", w.restarts)
	}
	if !slices.Contains(eventKinds(st), "already-moved") {
		t.Fatalf("no already-moved event: %v", eventKinds(st))
	}
}

// TestResume: a roll-out whose driver died is finished or rolled back, never
// left half done.
func TestResume(t *testing.T) {
	for _, tc := range []struct {
		name         string
		phase        Phase
		canaryPassed bool
		moved        []string // already on the new release
		current      string   // the unit being moved when the driver died
		wantPhase    Phase
		wantOn       string
	}{
		{"killed during the canary soak", PhaseRolling, false, units(8080), "", PhaseRolledBack, oldR},
		{"killed while restarting the canary", PhaseRolling, false, nil, "lodis@8080.service", PhaseRolledBack, oldR},
		{"killed after the canary passed", PhaseRolling, true, units(8080), "lodis@8081.service", PhaseDone, newR},
		{"killed while rolling back", PhaseRollingBack, true, units(8080, 8081), "", PhaseRolledBack, oldR},
		{"left by an older lodis at its supervisor restart", PhaseSupervisor, true, units(8080, 8081, 8082), "", PhaseDone, newR},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(oldR, units(8080, 8081, 8082))
			w.current = newR
			if tc.phase == PhaseRollingBack {
				w.current = oldR
			}
			for _, u := range tc.moved {
				w.units[u].sha = newR
			}
			if tc.current != "" {
				w.units[tc.current].sha = newR
			}
			st := NewState(KindUpgrade, oldR, newR, time.Now())
			st.Phase, st.CanaryPassed, st.Units = tc.phase, tc.canaryPassed, units(8080, 8081, 8082)
			st.Moved, st.Current, st.Reason = slices.Clone(tc.moved), tc.current, "earlier failure"
			if st.Moved == nil {
				st.Moved = []string{}
			}
			runner(w).Run(context.Background(), st)
			if st.Phase != tc.wantPhase {
				t.Fatalf("phase %s, want %s; events %v", st.Phase, tc.wantPhase, eventKinds(st))
			}
			if w.current != tc.wantOn {
				t.Fatalf("current = %.8s, want %.8s", w.current, tc.wantOn)
			}
			for u, sha := range w.shas() {
				if sha != tc.wantOn {
					t.Errorf("%s runs %.8s, want %.8s: a mix left behind", u, sha, tc.wantOn)
				}
			}
			if !slices.Contains(eventKinds(st), "resumed") {
				t.Errorf("no resumed event: %v", eventKinds(st))
			}
		})
	}
}

func TestCancelledRolloutIsPersistedForResume(t *testing.T) {
	w := newWorld(oldR, units(8080, 8081, 8082))
	ctx, cancel := context.WithCancel(context.Background())
	w.onRestart = func(u string) {
		if u == "lodis@8081.service" {
			cancel()
		}
	}
	st := NewState(KindUpgrade, oldR, newR, time.Now())
	err := runner(w).Run(ctx, st)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
	last := w.saved[len(w.saved)-1]
	if last.Phase != PhaseRolling || !last.CanaryPassed {
		t.Fatalf("persisted phase %s canary %v, want rolling with the canary passed", last.Phase, last.CanaryPassed)
	}
	// The next driver finishes it.
	w.onRestart = nil
	if err := runner(w).Run(context.Background(), &last); err != nil || last.Phase != PhaseDone {
		t.Fatalf("resume: %v, phase %s", err, last.Phase)
	}
	for u, sha := range w.shas() {
		if sha != newR {
			t.Errorf("%s runs %.8s after the resume", u, sha)
		}
	}
}

func TestUnknownPhaseIsAnError(t *testing.T) {
	st := NewState(KindUpgrade, oldR, newR, time.Now())
	st.Phase = "sideways"
	err := runner(newWorld(oldR, nil)).Run(context.Background(), st)
	if err == nil || !strings.Contains(err.Error(), `unknown phase "sideways"`) {
		t.Fatalf("Run = %v", err)
	}
}

func TestSortUnitsByPort(t *testing.T) {
	u := []string{"lodis@9000.service", "lodis@80.service", "lodis@8080.service"}
	systemd.SortUnits(u)
	if !slices.Equal(u, []string{"lodis@80.service", "lodis@8080.service", "lodis@9000.service"}) {
		t.Fatalf("sorted %v", u)
	}
}

// savedBeforeFlip records whether a State was persisted before current
// moved, as lodis drop --wait relies on.
type savedBeforeFlip struct {
	*world
	flippedUnsaved bool
}

func (s *savedBeforeFlip) Activate(sha string) error {
	if sha == newR && len(s.saved) == 0 {
		s.flippedUnsaved = true
	}
	return s.world.Activate(sha)
}

func TestRolloutIsRecordedBeforeTheFlip(t *testing.T) {
	w := &savedBeforeFlip{world: newWorld(oldR, units(8080))}
	r := runner(w.world)
	r.Releases = w
	if err := r.Run(context.Background(), NewState(KindUpgrade, oldR, newR, time.Now())); err != nil {
		t.Fatal(err)
	}
	if w.flippedUnsaved {
		t.Fatal("current was flipped before the roll-out was persisted: a waiter would see the new release active with no roll-out to follow")
	}
}
