package rollout

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lodis/lodis/internal/events"
	"github.com/lodis/lodis/internal/metrics"
	"github.com/lodis/lodis/internal/release"
	"github.com/lodis/lodis/internal/statusapi"
	"github.com/lodis/lodis/internal/systemd"
)

const badR = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"

// fakeUnits records the jobs the Service starts; nothing else is called.
type fakeUnits struct {
	systemd.Units
	mu      sync.Mutex
	started []string
}

func (f *fakeUnits) StartUnit(_ context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.started = append(f.started, name)
	return nil
}

func (f *fakeUnits) EnqueueStartUnit(ctx context.Context, name string) error {
	return f.StartUnit(ctx, name)
}

func (f *fakeUnits) starts() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.started)
}

// fakeHost stands in for the supervisor: a connection to systemd, unless
// disconnected.
type fakeHost struct {
	units        *fakeUnits
	disconnected bool
}

func (h *fakeHost) Units(context.Context) systemd.Units {
	if h.disconnected {
		return nil
	}
	return h.units
}

// newStore makes a store with releases oldR (active), newR and badR.
func newStore(t *testing.T) (*release.Store, string) {
	t.Helper()
	root := t.TempDir()
	for _, sha := range []string{oldR, newR, badR} {
		if err := os.MkdirAll(filepath.Join(root, "releases", sha), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, "releases", sha, "app"), []byte(sha), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	store := release.NewStore(root)
	if err := store.Activate(oldR); err != nil {
		t.Fatal(err)
	}
	return store, root
}

// rig runs a Service on a real unix socket, so that the peer's
// credentials (this test's, root's in CI) reach it as they do in
// production.
type rig struct {
	svc    *Service
	host   *fakeHost
	events *events.Stream
	root   string
	client *statusapi.Client
}

func newRig(t *testing.T, prepare func(store *release.Store, root string)) *rig {
	t.Helper()
	store, root := newStore(t)
	if prepare != nil {
		prepare(store, root)
	}
	r := &rig{host: &fakeHost{units: &fakeUnits{}}, events: events.New(256, nil), root: root}
	r.svc = &Service{Host: r.host, Events: r.events, Metrics: metrics.New(), Root: root,
		PublicKey: filepath.Join(root, "no-key.pub"), Poll: 10 * time.Millisecond}
	api := &statusapi.Server{}
	if err := r.svc.Register(api); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "s.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { api.Serve(ctx, l); done <- struct{}{} }()
	go func() { r.svc.Run(ctx); done <- struct{}{} }()
	t.Cleanup(func() { cancel(); <-done; <-done })
	r.client = statusapi.NewClient(sock)
	return r
}

func (r *rig) post(t *testing.T, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "http://supervisor/v1/rollout", strings.NewReader(body))
	resp, err := r.client.HTTP().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

func TestServiceTakesRequestsFromRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the admin path needs a root peer (CI runs as root)")
	}
	r := newRig(t, func(store *release.Store, root string) {
		store.MarkRejected(badR, "canary lodis@8080.service answered 503")
	})
	for _, tc := range []struct {
		body string
		code int
		want string
	}{
		{`nonsense`, 400, "bad roll-out request"},
		{`{"sha256":"` + newR + `","colour":"red"}`, 400, `unknown field "colour"`},
		{`{"sha256":"abc"}`, 400, `bad sha256 "abc"`},
		{`{"sha256":"` + strings.Repeat("d", 64) + `"}`, 400, "is not in the store"},
		{`{"sha256":"` + oldR + `"}`, 422, "is active already"},
		{`{"sha256":"` + badR + `"}`, 422, "was rejected: canary"},
	} {
		code, body := r.post(t, tc.body)
		if code != tc.code || !strings.Contains(body, tc.want) || strings.Contains(body, "\n") {
			t.Errorf("POST %s: %d %q, want %d and one line with %q", tc.body, code, body, tc.code, tc.want)
		}
	}
	if s := r.host.units.starts(); len(s) != 0 {
		t.Fatalf("bad requests started %v", s)
	}
	// A release unsigned once a key is configured is refused.
	priv, pub, _ := release.GenerateKey()
	_ = priv
	key := filepath.Join(r.root, "upgrade.pub")
	os.WriteFile(key, pub, 0o644)
	r.svc.PublicKey = key
	if code, body := r.post(t, `{"sha256":"`+newR+`"}`); code != 422 || !strings.Contains(body, "unsigned") {
		t.Errorf("unsigned release with a key: %d %q, want 422", code, body)
	}
	r.svc.PublicKey = filepath.Join(r.root, "no-key.pub")
	code, body := r.post(t, `{"sha256":"`+newR+`"}`)
	if code != http.StatusAccepted || !strings.Contains(body, RequestUnit(newR)) {
		t.Fatalf("good request: %d %q", code, body)
	}
	if s := r.host.units.starts(); !slices.Equal(s, []string{RequestUnit(newR)}) {
		t.Fatalf("started %v, want root's request unit", s)
	}
	r.host.disconnected = true
	if code, body := r.post(t, `{"sha256":"`+newR+`"}`); code != 503 || !strings.Contains(body, "cannot reach systemd") {
		t.Errorf("POST while systemd is unreachable: %d %q", code, body)
	}
	// Nothing of this changed the store.
	if sha, _, _ := release.NewStore(r.root).Active(); sha != oldR {
		t.Errorf("requests changed the active release to %.8s", sha)
	}
}

func TestServiceRefusesARequestDuringARollout(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the admin path needs a root peer (CI runs as root)")
	}
	st := NewState(KindUpgrade, oldR, newR, time.Now())
	st.Phase = PhaseRolling
	r := newRig(t, func(store *release.Store, root string) { NewStore(store).Save(st) })
	if code, body := r.post(t, `{"sha256":"`+newR+`"}`); code != 409 || !strings.Contains(body, "a roll-out is under way: "+st.ID) {
		t.Fatalf("POST during a roll-out: %d %q, want 409", code, body)
	}
}

func TestServiceRelaysRootsRollout(t *testing.T) {
	r := newRig(t, nil)
	store := NewStore(release.NewStore(r.root))
	st := NewState(KindUpgrade, oldR, newR, time.Now())
	w := newWorld(oldR, units(8080))
	// The service has read rollout.json once (it reads the release store
	// right after): the roll-out below is new to it, its steps relayed.
	r.waitLines(t, "the service's first read", `lodis_release_info{sha256="`+oldR+`",state="active",version=""} 1`)
	run := &Runner{Ops: w, Releases: w, Persist: store,
		CanarySoak: 20 * time.Millisecond, ProbeInterval: time.Millisecond}
	if err := run.Run(context.Background(), st); err != nil {
		t.Fatal(err)
	}
	var got []string
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		got = nil
		for _, e := range r.events.Since(0) {
			if e.Kind == events.KindRollout {
				got = append(got, e.Action)
			}
		}
		if slices.Contains(got, "done") {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, want := range []string{"started", "flipped", "restarting", "canary-passed", "done"} {
		if !slices.Contains(got, want) {
			t.Errorf("events %v lack %q", got, want)
		}
	}
	var cur *State
	if err := r.client.Get(context.Background(), "/v1/rollout?id="+st.ID, &cur); err != nil || cur == nil || cur.Phase != PhaseDone {
		t.Fatalf("GET /v1/rollout?id=: %+v %v", cur, err)
	}
	var ae *statusapi.APIError
	if err := r.client.Get(context.Background(), "/v1/rollout?id=nope", &cur); !asAPIError(err, &ae) || ae.Status != 404 {
		t.Fatalf("GET an unknown roll-out: %v, want 404", err)
	}
	if s := r.svc.Status(context.Background()); s == nil || s.Running || s.Phase != "done" || s.Moved != 1 {
		t.Fatalf("status line %+v", s)
	}
}

func TestServiceHasRootTakeUpAnUnfinishedRollout(t *testing.T) {
	st := NewState(KindUpgrade, oldR, newR, time.Now())
	st.Phase, st.Units = PhaseRolling, units(8080)
	r := newRig(t, func(store *release.Store, root string) { NewStore(store).Save(st) })
	deadline := time.Now().Add(5 * time.Second)
	for !slices.Contains(r.host.units.starts(), UpgradeUnit) {
		if time.Now().After(deadline) {
			t.Fatalf("started %v, want %s", r.host.units.starts(), UpgradeUnit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestDurationJSON(t *testing.T) {
	var d Duration
	if err := d.UnmarshalJSON([]byte(`"1m30s"`)); err != nil || time.Duration(d) != 90*time.Second {
		t.Fatalf("1m30s: %v %v", d, err)
	}
	if b, _ := d.MarshalJSON(); !bytes.Equal(b, []byte(`"1m30s"`)) {
		t.Fatalf("marshal %s", b)
	}
	if err := d.UnmarshalJSON([]byte(`5`)); err == nil {
		t.Fatal("a bare number was accepted")
	}
}

func asAPIError(err error, ae **statusapi.APIError) bool { return errors.As(err, ae) }
