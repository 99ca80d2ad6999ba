package rollout

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lodis/lodis/internal/events"
	"github.com/lodis/lodis/internal/health"
	"github.com/lodis/lodis/internal/metrics"
	"github.com/lodis/lodis/internal/release"
	"github.com/lodis/lodis/internal/statusapi"
	"github.com/lodis/lodis/internal/systemd"
)

// fakeHost stands in for the supervisor: it counts the holds of its worker
// remedies and has a connection to systemd unless told otherwise.
type fakeHost struct {
	mu           sync.Mutex
	holds, ends  int
	disconnected bool
}

// noUnits stands in for a live connection; never called: the test's Ops
// stand in for systemd.
type noUnits struct{ systemd.Units }

func (h *fakeHost) Units(context.Context) systemd.Units {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.disconnected {
		return nil
	}
	return noUnits{}
}

func (h *fakeHost) HoldWorkers(context.Context, string) func() {
	h.mu.Lock()
	h.holds++
	h.mu.Unlock()
	return func() { h.mu.Lock(); h.ends++; h.mu.Unlock() }
}

func (h *fakeHost) held() (int, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.holds, h.ends
}

// storeWorld is the in-memory world whose current link is the release
// store's: workers start whatever the store's current points at.
type storeWorld struct {
	*world
	store *release.Store
	sups  []bool // RestartSupervisor calls (wait)
}

func (w *storeWorld) sync() {
	if sha, _, err := w.store.Active(); err == nil {
		w.mu.Lock()
		w.current = sha
		w.mu.Unlock()
	}
}

func (w *storeWorld) Restart(ctx context.Context, u string) error {
	w.sync()
	return w.world.Restart(ctx, u)
}

func (w *storeWorld) Health(ctx context.Context, u string) (health.Report, error) {
	w.sync()
	return w.world.Health(ctx, u)
}

func (w *storeWorld) RestartSupervisor(_ context.Context, wait bool) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.sups = append(w.sups, wait)
	return nil
}

func (w *storeWorld) supervisorRestarts() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.sups)
}

// serviceRig is a Service on a release store holding oldR (active), newR
// and badR, with three running workers.
type serviceRig struct {
	t      *testing.T
	svc    *Service
	host   *fakeHost
	world  *storeWorld
	events *events.Stream
	srv    *httptest.Server
	root   string
	cancel context.CancelFunc
	done   chan struct{}
}

const badR = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"

func newStore(t *testing.T) (*release.Store, string) {
	t.Helper()
	root := t.TempDir()
	for _, sha := range []string{oldR, newR, badR} {
		if err := os.MkdirAll(filepath.Join(root, "releases", sha), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, "releases", sha, "lodis"), []byte(sha), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	store := release.NewStore(root)
	if err := store.Activate(oldR); err != nil {
		t.Fatal(err)
	}
	return store, root
}

// newRig makes the rig; prepare may change the store, persist a roll-out or
// set up the world before the Service starts. self is the supervisor's own
// sha256.
func newRig(t *testing.T, self string, prepare func(store *release.Store, root string, w *storeWorld)) *serviceRig {
	t.Helper()
	store, root := newStore(t)
	r := &serviceRig{t: t, host: &fakeHost{}, root: root, events: events.New(256, nil), done: make(chan struct{})}
	r.world = &storeWorld{world: newWorld(oldR, units(8080, 8081, 8082)), store: store}
	r.world.unhealthy[badR] = true
	if prepare != nil {
		prepare(store, root, r.world)
	}
	r.svc = &Service{Host: r.host, Events: r.events, Metrics: metrics.New(), Self: self,
		Root: root, RestartWait: 100 * time.Millisecond, ProbeInterval: 5 * time.Millisecond}
	r.svc.newOps = func(func(context.Context) (systemd.Units, error)) Ops { return r.world }
	api := &statusapi.Server{}
	if err := r.svc.Register(api); err != nil {
		t.Fatal(err)
	}
	r.srv = httptest.NewServer(api.Handler())
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.svc.Run(ctx); close(r.done) }()
	t.Cleanup(func() { cancel(); <-r.done; r.srv.Close() })
	return r
}

func (r *serviceRig) post(body string) (int, string) {
	r.t.Helper()
	resp, err := http.Post(r.srv.URL+"/v1/rollout", "application/json", strings.NewReader(body))
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

func (r *serviceRig) get(query string) (int, *State) {
	r.t.Helper()
	resp, err := http.Get(r.srv.URL + "/v1/rollout" + query)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	var st *State
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, &st); err != nil {
			r.t.Fatalf("GET /v1/rollout: %v: %s", err, b)
		}
	}
	return resp.StatusCode, st
}

// wait polls GET /v1/rollout until the roll-out has ended.
func (r *serviceRig) wait() *State {
	r.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if code, st := r.get(""); code == http.StatusOK && st != nil && st.Phase.Finished() {
			return st
		}
		time.Sleep(5 * time.Millisecond)
	}
	r.t.Fatalf("the roll-out did not end; events:%s", r.describe())
	return nil
}

func (r *serviceRig) actions() []string {
	var a []string
	for _, e := range r.events.Since(0) {
		if e.Kind == events.KindRollout {
			a = append(a, e.Action)
		}
	}
	return a
}

func (r *serviceRig) describe() string {
	var b strings.Builder
	for _, e := range r.events.Since(0) {
		b.WriteString("\n  " + e.Kind + " " + e.Action + " " + e.Unit + ": " + e.Message)
	}
	return b.String()
}

func TestServiceRollsOutAndMovesItselfLast(t *testing.T) {
	r := newRig(t, oldR, nil)
	if code, st := r.get(""); code != http.StatusOK || st != nil {
		t.Fatalf("GET before any roll-out: %d %+v, want 200 null", code, st)
	}
	code, body := r.post(`{"sha256":"` + newR + `","canary_soak":"30ms"}`)
	if code != http.StatusAccepted {
		t.Fatalf("POST: %d %s", code, body)
	}
	var accepted State
	json.Unmarshal([]byte(body), &accepted)
	if accepted.Kind != KindUpgrade || accepted.From != oldR || accepted.To != newR || time.Duration(accepted.CanarySoak) != 30*time.Millisecond {
		t.Fatalf("accepted %+v", accepted)
	}
	// The supervisor's own restart is queued; no restart comes (this is a
	// test), so after RestartWait the Service finishes it itself.
	st := r.wait()
	if st.ID != accepted.ID || st.Phase != PhaseDone || len(st.Moved) != 3 {
		t.Fatalf("roll-out %s %s, %d moved; want %s done with 3", st.ID, st.Phase, len(st.Moved), accepted.ID)
	}
	for u, sha := range r.world.shas() {
		if sha != newR {
			t.Errorf("%s on %.8s", u, sha)
		}
	}
	if r.world.supervisorRestarts() < 1 || r.world.sups[0] {
		t.Errorf("supervisor restarts %v: want its own restart queued, not waited for", r.world.sups)
	}
	acts := r.actions()
	moved := slices.Index(acts, "workers-moved")
	if moved < 0 || slices.Index(acts, "supervisor-restart") < moved || slices.Index(acts, "done") < slices.Index(acts, "supervisor-restart") {
		t.Errorf("events %v: want the workers moved, then the supervisor's restart, then done", acts)
	}
	for _, want := range []string{"started", "flipped", "canary-soak", "canary-passed", "moved"} {
		if !slices.Contains(acts, want) {
			t.Errorf("no %s event in %v", want, acts)
		}
	}
	if holds, ends := r.host.held(); holds != 1 || ends != 1 {
		t.Errorf("worker remedies held %d times, resumed %d times; want once each", holds, ends)
	}
	if sha, _, _ := release.NewStore(r.root).Active(); sha != newR {
		t.Errorf("active %.8s after the roll-out", sha)
	}
	if code, st := r.get("?id=" + accepted.ID); code != http.StatusOK || st.ID != accepted.ID {
		t.Errorf("GET ?id=: %d %+v", code, st)
	}
	if code, _ := r.get("?id=nope"); code != http.StatusNotFound {
		t.Errorf("GET ?id=nope: %d, want 404", code)
	}
	s := r.svc.Status(context.Background())
	if s == nil || s.Phase != "done" || s.Running || s.Moved != 3 || s.Total != 3 || s.To != newR {
		t.Errorf("status line %+v", s)
	}
}

func TestServiceRollsBackABadRelease(t *testing.T) {
	// The supervisor runs the bad release (restarted while current pointed
	// at it): after the rollback it moves onto the active one.
	r := newRig(t, badR, nil)
	if code, body := r.post(`{"sha256":"` + badR + `","canary_soak":"30ms"}`); code != http.StatusAccepted {
		t.Fatalf("POST: %d %s", code, body)
	}
	st := r.wait()
	if st.Phase != PhaseRolledBack || !strings.Contains(st.Reason, "503") {
		t.Fatalf("roll-out %s (%s), want rolled back for the 503", st.Phase, st.Reason)
	}
	for u, sha := range r.world.shas() {
		if sha != oldR {
			t.Errorf("%s on %.8s: a mix left behind", u, sha)
		}
	}
	if rel, _ := release.NewStore(r.root).Release(badR); rel == nil || rel.Rejected == "" {
		t.Errorf("the bad release is not marked rejected: %+v", rel)
	}
	acts := r.actions()
	if !slices.Contains(acts, "rollback-started") || !slices.Contains(acts, "rolled-back") || !slices.Contains(acts, "supervisor-restart") {
		t.Errorf("events %v: want the rollback and the supervisor's move back", acts)
	}
	if e, ok := find(r.events, "rollback-started"); !ok || e.Result != "failed" || e.Instance != "8080" {
		t.Errorf("rollback-started event %+v: want result failed on the canary's port", e)
	}
	// The same release again is refused.
	if code, body := r.post(`{"sha256":"` + badR + `"}`); code != http.StatusUnprocessableEntity || !strings.Contains(body, "was rejected") {
		t.Errorf("a rejected release again: %d %s", code, body)
	}
}

func find(ev *events.Stream, action string) (events.Event, bool) {
	for _, e := range ev.Since(0) {
		if e.Action == action {
			return e, true
		}
	}
	return events.Event{}, false
}

func TestServiceRefusesASecondRollout(t *testing.T) {
	block := make(chan struct{})
	r := newRig(t, oldR, func(_ *release.Store, _ string, w *storeWorld) { w.onRestart = func(string) { <-block } })
	code, body := r.post(`{"sha256":"` + newR + `","canary_soak":"20ms"}`)
	if code != http.StatusAccepted {
		t.Fatalf("POST: %d %s", code, body)
	}
	var first State
	json.Unmarshal([]byte(body), &first)
	code, body = r.post(`{"kind":"rollback","sha256":"` + badR + `"}`)
	close(block)
	if code != http.StatusConflict || !strings.Contains(body, "a roll-out is under way: "+first.ID) {
		t.Fatalf("second POST: %d %q, want 409 naming %s", code, body, first.ID)
	}
	if st := r.wait(); st.ID != first.ID {
		t.Fatalf("the second request changed the roll-out: %+v", st)
	}
}

func TestServiceBadRequests(t *testing.T) {
	r := newRig(t, oldR, nil)
	for _, tc := range []struct {
		body string
		code int
		want string
	}{
		{`nonsense`, 400, "bad roll-out request"},
		{`{"sha256":"` + newR + `","colour":"red"}`, 400, `unknown field "colour"`},
		{`{"sha256":"abc"}`, 400, `bad sha256 "abc"`},
		{`{"sha256":"` + strings.Repeat("d", 64) + `"}`, 400, "is not in the store"},
		{`{"kind":"sideways","sha256":"` + newR + `"}`, 400, `bad kind "sideways"`},
		{`{"sha256":"` + newR + `","canary_soak":"-1s"}`, 400, "bad canary_soak -1s"},
		{`{"sha256":"` + newR + `","canary_soak":"soon"}`, 400, "bad roll-out request"},
		{`{"sha256":"` + oldR + `"}`, 422, "is active already"},
	} {
		code, body := r.post(tc.body)
		if code != tc.code || !strings.Contains(body, tc.want) || strings.Contains(body, "\n") {
			t.Errorf("POST %s: %d %q, want %d and one line with %q", tc.body, code, body, tc.code, tc.want)
		}
	}
	r.host.mu.Lock()
	r.host.disconnected = true
	r.host.mu.Unlock()
	if code, body := r.post(`{"sha256":"` + newR + `"}`); code != http.StatusServiceUnavailable || !strings.Contains(body, "cannot reach systemd") {
		t.Errorf("POST while systemd is unreachable: %d %q", code, body)
	}
	// Nothing of this changed the machine.
	if sha, _, _ := release.NewStore(r.root).Active(); sha != oldR || len(r.world.restarts) != 0 {
		t.Errorf("bad requests changed things: active %.8s, restarts %v", sha, r.world.restarts)
	}
	if st, _ := NewStore(release.NewStore(r.root)).Load(); st != nil {
		t.Errorf("bad requests left a roll-out: %+v", st)
	}
}

func TestServiceRefusesWhileAnotherProcessDrives(t *testing.T) {
	r := newRig(t, oldR, func(store *release.Store, _ string, _ *storeWorld) {
		unlock, err := NewStore(store).TryLock()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(unlock)
	})
	if code, body := r.post(`{"sha256":"` + newR + `"}`); code != http.StatusConflict || !strings.Contains(body, "another process is driving a roll-out") {
		t.Fatalf("POST while another process holds the roll-out lock: %d %q", code, body)
	}
}

// TestServiceTakesUpAnUnfinishedRollout: a supervisor that starts with a
// roll-out persisted unfinished finishes it or rolls it back.
func TestServiceTakesUpAnUnfinishedRollout(t *testing.T) {
	for _, tc := range []struct {
		name      string
		phase     Phase
		passed    bool
		moved     []string
		wantPhase Phase
		wantOn    string
	}{
		{"killed during the canary soak", PhaseRolling, false, units(8080), PhaseRolledBack, oldR},
		{"killed after the canary passed", PhaseRolling, true, units(8080), PhaseDone, newR},
		{"restarted itself after moving every worker", PhaseSupervisor, true, units(8080, 8081, 8082), PhaseDone, newR},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var want string
			r := newRig(t, newR, func(store *release.Store, root string, w *storeWorld) {
				for _, u := range tc.moved {
					w.units[u].sha = newR
				}
				store.Activate(newR)
				st := NewState(KindUpgrade, oldR, newR, time.Now())
				st.Phase, st.CanaryPassed, st.Units, st.Moved = tc.phase, tc.passed, units(8080, 8081, 8082), tc.moved
				st.CanarySoak = Duration(20 * time.Millisecond)
				want = st.ID
				if err := NewStore(release.NewStore(root)).Save(st); err != nil {
					t.Fatal(err)
				}
			})
			st := r.wait()
			if st.ID != want || st.Phase != tc.wantPhase {
				t.Fatalf("roll-out %s %s (%s), want %s %s", st.ID, st.Phase, st.Reason, want, tc.wantPhase)
			}
			for u, sha := range r.world.shas() {
				if sha != tc.wantOn {
					t.Errorf("%s on %.8s, want %.8s: a mix left behind", u, sha, tc.wantOn)
				}
			}
			acts := r.actions()
			if len(acts) < 2 || acts[0] != "taking-up" || !slices.Contains(acts, "resumed") {
				t.Errorf("events %v: want taking-up, then resumed", acts)
			}
		})
	}
}

func TestDurationJSON(t *testing.T) {
	var r Request
	if err := json.Unmarshal([]byte(`{"sha256":"x","canary_soak":"1m30s"}`), &r); err != nil || time.Duration(r.CanarySoak) != 90*time.Second {
		t.Fatalf("unmarshal: %v %v", r.CanarySoak, err)
	}
	b, _ := json.Marshal(Request{CanarySoak: Duration(2 * time.Second)})
	if !bytes.Contains(b, []byte(`"canary_soak":"2s"`)) {
		t.Fatalf("marshal: %s", b)
	}
	if err := json.Unmarshal([]byte(`{"canary_soak":5}`), &r); err == nil || !strings.Contains(err.Error(), `want a duration such as "5s"`) {
		t.Fatalf("a number: %v", err)
	}
}
