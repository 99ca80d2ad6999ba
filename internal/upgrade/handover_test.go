package upgrade

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lodis/lodis/internal/release"
	"github.com/lodis/lodis/internal/rollout"
	"github.com/lodis/lodis/internal/statusapi"
)

// fakeSupervisor answers the roll-out API on a unix socket as the
// supervisor does, driving each roll-out with a Runner on the idle machine.
type fakeSupervisor struct {
	root string
	sock string
	srv  *http.Server

	mu       sync.Mutex
	requests []rollout.Request
	busy     int  // answer 409 this many times first
	older    bool // a supervisor without the roll-out API
	vanish   bool // accept, then stop answering without rolling out
	hangup   bool // accept and roll out, but hang up instead of answering
	fail     bool // roll-outs end rolled back
	wg       sync.WaitGroup
}

func startFake(t *testing.T, root string, setup func(f *fakeSupervisor)) *fakeSupervisor {
	t.Helper()
	f := &fakeSupervisor{root: root, sock: filepath.Join(t.TempDir(), "supervisor.sock")}
	if setup != nil {
		setup(f)
	}
	l, err := net.Listen("unix", f.sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	if !f.older {
		mux.HandleFunc("POST /v1/rollout", f.post)
		mux.HandleFunc("GET /v1/rollout", f.get)
	}
	f.srv = &http.Server{Handler: mux}
	go f.srv.Serve(l)
	t.Cleanup(func() { f.srv.Close(); f.wg.Wait() })
	return f
}

func (f *fakeSupervisor) persist() *rollout.Store {
	return rollout.NewStore(release.NewStore(f.root))
}

func (f *fakeSupervisor) post(w http.ResponseWriter, r *http.Request) {
	var req rollout.Request
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, req)
	if f.busy > 0 {
		f.busy--
		http.Error(w, "a roll-out is under way: another one; try again when it has ended", http.StatusConflict)
		return
	}
	store := release.NewStore(f.root)
	active, _, _ := store.Active()
	st := rollout.NewState(req.Kind, active, req.SHA256, time.Now())
	f.persist().Save(st)
	if !f.hangup {
		statusapi.WriteJSON(w, http.StatusAccepted, st)
	}
	switch {
	case f.vanish:
		time.AfterFunc(50*time.Millisecond, func() { f.srv.Close() })
	case f.fail:
		st.Phase, st.Reason, st.Finished = rollout.PhaseRolledBack, "canary lodis@8080.service failed", time.Now()
		f.persist().Save(st)
	default:
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			unlock, err := f.persist().Lock(context.Background())
			if err != nil {
				return
			}
			defer unlock()
			r := &rollout.Runner{Ops: idle{}, Releases: store, Persist: f.persist(), SupervisorIsSelf: false}
			r.Run(context.Background(), st)
		}()
		if f.hangup {
			panic(http.ErrAbortHandler)
		}
	}
}

func (f *fakeSupervisor) get(w http.ResponseWriter, r *http.Request) {
	st, _ := f.persist().Load()
	if id := r.URL.Query().Get("id"); id != "" && (st == nil || st.ID != id) {
		http.Error(w, "no such roll-out", http.StatusNotFound)
		return
	}
	statusapi.WriteJSON(w, http.StatusOK, st)
}

func (f *fakeSupervisor) got() []rollout.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]rollout.Request(nil), f.requests...)
}

// logged gives u a log that the test can read.
func logged(u *Upgrader) *bytes.Buffer {
	var b bytes.Buffer
	u.Log.SetOutput(&b)
	return &b
}

func TestHandOver(t *testing.T) {
	for _, tc := range []struct {
		name     string
		setup    func(f *fakeSupervisor)
		noSocket bool
		want     Outcome
		requests int
		log      []string // substrings the upgrade's log must have
		notLog   []string
	}{
		{name: "the supervisor rolls it out", want: Activated, requests: 1,
			log:    []string{"roll-out handed to the supervisor", "event=flipped", "event=done", "by=supervisor"},
			notLog: []string{"driving the roll-out in this process"}},
		{name: "a busy supervisor is asked again", setup: func(f *fakeSupervisor) { f.busy = 2 }, want: Activated, requests: 3,
			log: []string{"the supervisor is busy with another roll-out: waiting for it", "roll-out handed to the supervisor"}},
		{name: "the supervisor rolls it back", setup: func(f *fakeSupervisor) { f.fail = true }, want: RolledBack, requests: 1,
			log: []string{"roll-out handed to the supervisor"}},
		{name: "the supervisor hangs up after accepting", setup: func(f *fakeSupervisor) { f.hangup = true }, want: Activated, requests: 1,
			log:    []string{"the supervisor accepted the roll-out and stopped answering: following it", "event=done"},
			notLog: []string{"driving the roll-out in this process"}},
		{name: "no supervisor", noSocket: true, want: Activated,
			log: []string{"no supervisor drives roll-outs here: driving the roll-out in this process", "not reachable"}},
		{name: "an older supervisor without the roll-out API", setup: func(f *fakeSupervisor) { f.older = true }, want: Activated,
			log: []string{"does not drive roll-outs (an older release)", "driving the roll-out in this process"}},
		{name: "the supervisor vanishes mid-roll-out", setup: func(f *fakeSupervisor) { f.vanish = true }, want: Activated, requests: 1,
			log: []string{"roll-out handed to the supervisor", "the supervisor does not answer", "nobody drives its roll-out: taking it over", "event=done"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, root := newUpgrader(t)
			u.TakeOverAfter = 300 * time.Millisecond
			f := startFake(t, root, tc.setup)
			u.StatusSocket = f.sock
			if tc.noSocket {
				u.StatusSocket = filepath.Join(t.TempDir(), "none.sock")
			}
			log := logged(u)
			drop(t, root, bins.v2)
			out, err := u.Run(context.Background())
			if err != nil || out != tc.want {
				t.Fatalf("Run = %q, %v; want %q\n%s", out, err, tc.want, log)
			}
			if n := len(f.got()); n != tc.requests {
				t.Errorf("%d requests to the supervisor, want %d", n, tc.requests)
			}
			if rs := f.got(); len(rs) > 0 && (rs[0].SHA256 != fileSHA(t, bins.v2) || rs[0].Kind != rollout.KindUpgrade || time.Duration(rs[0].CanarySoak) != u.CanarySoak) {
				t.Errorf("request %+v, want an upgrade to u2 with the canary soak of the command", rs[0])
			}
			for _, s := range tc.log {
				if !strings.Contains(log.String(), s) {
					t.Errorf("log lacks %q:\n%s", s, log)
				}
			}
			for _, s := range tc.notLog {
				if strings.Contains(log.String(), s) {
					t.Errorf("log has %q:\n%s", s, log)
				}
			}
			active := activeVersion(t, root)
			if tc.want == Activated && active != "u2" || tc.want == RolledBack && active == "u2" {
				t.Errorf("active %q after %s", active, tc.want)
			}
		})
	}
}

// TestUpgradeExitStatusAndLastLine: the command ends with one line saying
// what became of the drop, and exit status 1 when it was rolled back.
func TestUpgradeExitStatusAndLastLine(t *testing.T) {
	_, root := newUpgrader(t)
	f := startFake(t, root, func(f *fakeSupervisor) { f.fail = true })
	drop(t, root, bins.v2)
	var stderr bytes.Buffer
	// As `lodis upgrade -root ROOT -sandbox none -settle 50ms -public-key ''
	// -status-socket SOCK -log-format text` does.
	upgrade := func() int {
		fs := flag.NewFlagSet("lodis upgrade", flag.ContinueOnError)
		var cfg Config
		cfg.Flags(fs, false)
		if err := fs.Parse([]string{"-root", root, "-sandbox", "none", "-settle", "50ms", "-public-key", "", "-status-socket", f.sock, "-log-format", "text"}); err != nil {
			t.Fatal(err)
		}
		u, err := New(cfg, &stderr)
		if err != nil {
			t.Fatal(err)
		}
		return u.Upgrade(context.Background())
	}
	code := upgrade()
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	last := lines[len(lines)-1]
	if code != 1 || !strings.Contains(last, "rolled back: canary lodis@8080.service failed") || !strings.Contains(last, "outcome=rolled-back") {
		t.Fatalf("exit %d, last line %q; want 1 and the rollback's reason\n%s", code, last, stderr.String())
	}
	drop(t, root, bins.v3)
	f.mu.Lock()
	f.fail = false
	f.mu.Unlock()
	stderr.Reset()
	code = upgrade()
	lines = strings.Split(strings.TrimSpace(stderr.String()), "\n")
	if last := lines[len(lines)-1]; code != 0 || !strings.Contains(last, "rolled out: every running worker is on u3") {
		t.Fatalf("exit %d, last line %q; want 0 and the release rolled out\n%s", code, last, stderr.String())
	}
}

// TestFollowSurvivesTheSupervisorsRestart: the supervisor goes away for a
// moment (it restarts itself at the end of every upgrade) and comes back
// with the roll-out finished: the command reports it without taking over.
func TestFollowSurvivesTheSupervisorsRestart(t *testing.T) {
	u, root := newUpgrader(t)
	u.store = release.NewStore(root)
	u.TakeOverAfter = 10 * time.Second
	sock := filepath.Join(t.TempDir(), "supervisor.sock")
	u.StatusSocket = sock
	log := logged(u)
	st := rollout.NewState(rollout.KindUpgrade, "a", "b", time.Now())
	st.Phase = rollout.PhaseSupervisor
	fs := u.rollouts()
	fs.Save(st)
	done := make(chan error, 1)
	go func() { done <- u.client().Follow(context.Background(), st.ID) }()
	time.Sleep(600 * time.Millisecond) // nothing answers meanwhile
	st.Phase, st.Finished = rollout.PhaseDone, time.Now()
	fs.Save(st)
	startFake(t, root, func(f *fakeSupervisor) { f.sock = sock })
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("follow = %v, want the roll-out done\n%s", err, log)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("follow did not end after the supervisor came back\n%s", log)
	}
	if strings.Contains(log.String(), "taking it over") {
		t.Errorf("the command took over a roll-out the supervisor finished:\n%s", log)
	}
}
