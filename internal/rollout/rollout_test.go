package rollout

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
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
	nextPID   int
	saved     []State
	onRestart func(unit string) // test hook, called before a restart
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

func (w *world) list(running bool) []string {
	var out []string
	for u, wk := range w.units {
		if !running || wk.running {
			out = append(out, u)
		}
	}
	systemd.SortUnits(out)
	return out
}

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

func (w *world) Health(_ context.Context, u string) (health.Report, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	wk := w.units[u]
	if wk == nil {
		return health.Report{}, errors.New("connection refused")
	}
	if !wk.running { // socket activation
		if w.failStart[w.current] {
			return health.Report{}, errors.New("connection reset by peer")
		}
		wk.running, wk.sha, wk.pid, wk.probes = true, w.current, w.pid(), 0
	}
	wk.probes++
	if w.unhealthy[wk.sha] {
		return health.Report{}, &health.StatusError{Status: "503 Service Unavailable", Body: `{"status":"unhealthy"}`}
	}
	if w.crashSoak[wk.sha] && wk.probes == 4 {
		wk.pid = w.pid() // crashed and was activated again
	}
	return health.Report{Status: "ok", SHA256: wk.sha, PID: wk.pid}, nil
}

func (w *world) RestartSupervisor(context.Context, bool) error { return nil }

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
			wantPhase: PhaseRolledBack, wantOn: oldR, wantRestarts: units(8080), wantReason: "restart job failed"},
		{name: "canary restarts during its soak",
			running: units(8080, 8081), setup: func(w *world) { w.crashSoak[newR] = true },
			wantPhase: PhaseRolledBack, wantOn: oldR, wantRestarts: units(8080, 8080), wantReason: "restarted during the soak"},
		{name: "the second worker fails: the canary goes back too",
			running: units(8080, 8081, 8082), setup: func(w *world) {
				w.onRestart = func(u string) {
					if u == "lodis@8081.service" && w.current == newR {
						w.mu.Lock()
						w.unhealthy[newR] = true
						w.mu.Unlock()
					}
				}
			},
			wantPhase: PhaseRolledBack, wantOn: oldR, wantRestarts: units(8080, 8081, 8081, 8080), wantReason: "lodis@8081.service"},
		{name: "nothing running: the first socket is activated as the canary",
			idle:      units(8080, 8081),
			wantPhase: PhaseDone, wantOn: newR, wantRestarts: nil},
		{name: "nothing running, canary unhealthy",
			idle: units(8080, 8081), setup: func(w *world) { w.unhealthy[newR] = true },
			wantPhase: PhaseRolledBack, wantOn: oldR, wantRestarts: units(8080, 8080), wantReason: "503"},
		{name: "no lodis socket at all: the flip is the whole roll-out",
			wantPhase: PhaseDone, wantOn: newR},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(oldR, tc.running, tc.idle...)
			if tc.setup != nil {
				tc.setup(w)
			}
			st := NewState(KindUpgrade, oldR, newR, time.Now())
			err := runner(w).Run(context.Background(), st)
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
			if !slices.Equal(w.restarts, tc.wantRestarts) {
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
		{"killed at the supervisor restart", PhaseSupervisor, true, units(8080, 8081, 8082), "", PhaseDone, newR},
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

func TestSupervisorMovesLast(t *testing.T) {
	w := newWorld(oldR, units(8080))
	r := runner(w)
	r.SupervisorIsSelf = true
	st := NewState(KindUpgrade, oldR, newR, time.Now())
	if err := r.Run(context.Background(), st); !errors.Is(err, ErrHandedToNextSupervisor) {
		t.Fatalf("Run = %v, want the hand-over to the next supervisor", err)
	}
	if st.Phase != PhaseSupervisor || !slices.Equal(st.Moved, units(8080)) {
		t.Fatalf("phase %s moved %v: the workers must be moved before the supervisor", st.Phase, st.Moved)
	}
	// The restarted supervisor loads the state and finishes.
	if err := runner(w).Run(context.Background(), st); err != nil || st.Phase != PhaseDone {
		t.Fatalf("next supervisor: %v, phase %s", err, st.Phase)
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
