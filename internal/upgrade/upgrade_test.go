package upgrade

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/lodis/lodis/internal/appconf"
	"github.com/lodis/lodis/internal/buildinfo"
	"github.com/lodis/lodis/internal/release"
	"github.com/lodis/lodis/internal/rollout"
	"github.com/lodis/lodis/internal/testenv"
)

var bins struct{ dir, v1, v2, v3, bad string }

func TestMain(m *testing.M) {
	code := 1
	repo, err := testenv.RepoRoot()
	if err == nil {
		bins.dir, err = os.MkdirTemp("", "lodis-upgrade-test-")
	}
	for _, b := range []struct {
		dst  *string
		spec testenv.Spec
	}{
		{&bins.v1, testenv.Spec{Version: "u1"}}, {&bins.v2, testenv.Spec{Version: "u2"}},
		{&bins.v3, testenv.Spec{Version: "u3"}}, {&bins.bad, testenv.Spec{Version: "u-bad", Fault: "serve-unhealthy"}},
	} {
		if err == nil {
			*b.dst, err = testenv.Build(repo, bins.dir, b.spec)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "upgrade tests:", err)
	} else {
		code = m.Run()
	}
	os.RemoveAll(bins.dir)
	os.Exit(code)
}

// idle is a machine with lodis installed and no port enabled: a roll-out is
// the flip alone. (Roll-outs over running workers are tested in package
// rollout, and against a real systemd in test/upgrade.)
type idle struct{}

func (idle) Running(context.Context) ([]string, error)             { return nil, nil }
func (idle) Listening(context.Context) ([]string, error)           { return nil, nil }
func (idle) Workers(context.Context, string) ([]string, error)     { return nil, nil }
func (idle) Restart(context.Context, string) error                 { return nil }
func (idle) Start(context.Context, string) error                   { return nil }
func (idle) Stop(context.Context, string) error                    { return nil }
func (idle) Check(context.Context, string) (rollout.Worker, error) { return rollout.Worker{}, nil }

func newUpgrader(t *testing.T) (*Upgrader, string) {
	t.Helper()
	root := t.TempDir()
	for _, d := range []string{"releases", "incoming", "rejected"} {
		os.Mkdir(filepath.Join(root, d), 0o755)
	}
	os.Symlink(bins.v1, filepath.Join(root, "current"))
	log := logrus.New()
	log.SetOutput(io.Discard)
	return &Upgrader{Config: Config{Root: root, AppConf: filepath.Join(root, "app.conf"), Settle: 50 * time.Millisecond, Sandbox: "none",
		CheckTimeout: 20 * time.Second, CanarySoak: time.Millisecond, Keep: 5, KeepRejected: 20}, Log: log, Ops: idle{}}, root
}

func drop(t *testing.T, root, src string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(root, "incoming", ".lodis.tmp")
	if err := os.WriteFile(tmp, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(root, "incoming", "lodis")); err != nil {
		t.Fatal(err)
	}
}

func activeVersion(t *testing.T, root string) string {
	t.Helper()
	l, err := release.NewStore(root).List()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range l.Releases {
		if e.State == "active" {
			return e.Version
		}
	}
	return ""
}

func TestUpgradeOutcomes(t *testing.T) {
	u, root := newUpgrader(t)
	ctx := context.Background()

	if out, err := u.Run(ctx); err != nil || out != "" {
		t.Fatalf("no drop: %q, %v; want nothing done", out, err)
	}
	drop(t, root, bins.v2)
	if out, err := u.Run(ctx); err != nil || out != Activated || activeVersion(t, root) != "u2" {
		t.Fatalf("good drop: %q, %v, active %q; want u2 activated", out, err, activeVersion(t, root))
	}
	drop(t, root, bins.v2)
	if out, err := u.Run(ctx); err != nil || out != Same {
		t.Fatalf("same binary again: %q, %v; want a no-op", out, err)
	}
	drop(t, root, bins.bad)
	if out, err := u.Run(ctx); err != nil || out != Rejected || activeVersion(t, root) != "u2" {
		t.Fatalf("bad drop: %q, %v, active %q; want rejected with u2 still active", out, err, activeVersion(t, root))
	}
	l, _ := release.NewStore(root).List()
	if len(l.Rejected) != 1 || !strings.Contains(l.Rejected[0].Reason, "trial: /__/health answered 503") {
		t.Fatalf("rejections %+v, want the trial's unhealthy answer", l.Rejected)
	}
	if p, _ := release.NewStore(root).Previous(); p == "" {
		t.Fatal("no previous release recorded after an upgrade")
	}
	if des, _ := os.ReadDir(filepath.Join(root, "incoming")); len(des) != 0 {
		t.Fatalf("left in incoming: %v", des)
	}
}

// gatedTrial is DirectTrial whose first run waits for gate: the test decides
// what lands while the first candidate is being validated.
type gatedTrial struct {
	gate  chan struct{}
	first sync.Once
}

func (g *gatedTrial) Run(ctx context.Context, binary string, app appconf.Config, timeout time.Duration) (release.TrialResult, error) {
	g.first.Do(func() {
		select {
		case <-g.gate:
		case <-ctx.Done():
		}
	})
	return release.DirectTrial{}.Run(ctx, binary, app, timeout)
}

// TestNewestDropWins: a drop that arrives while another is validated
// supersedes it; only the newest is rolled out.
func TestNewestDropWins(t *testing.T) {
	u, root := newUpgrader(t)
	g := &gatedTrial{gate: make(chan struct{})}
	u.Trial = g
	drop(t, root, bins.v2)
	go func() {
		// Lands while u2 is taken and validated: u2's trial waits for it.
		defer close(g.gate)
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			if _, err := os.Stat(filepath.Join(root, "incoming", "lodis")); err != nil {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		drop(t, root, bins.v3)
	}()
	out, err := u.Run(context.Background())
	if err != nil || out != Activated || activeVersion(t, root) != "u3" {
		t.Fatalf("two drops: %q, %v, active %q; want u3", out, err, activeVersion(t, root))
	}
	st, _ := rollout.NewStore(release.NewStore(root)).Load()
	if st == nil || st.ToVersion != "u3" || st.FromVersion != "" && st.FromVersion != "u1" {
		t.Fatalf("last roll-out %+v, want one from u1 to u3", st)
	}
}

func TestRollback(t *testing.T) {
	u, root := newUpgrader(t)
	drop(t, root, bins.v2)
	if _, err := u.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if l, err := release.NewStore(root).List(); err != nil || l.Previous != fileSHA(t, bins.v1) || activeVersion(t, root) != "u2" {
		t.Fatalf("after the upgrade: %+v %v; want u2 active and release one previous", l, err)
	}
	if err := u.Rollback(context.Background()); err != nil {
		t.Fatal(err)
	}
	if sha, _, _ := release.NewStore(root).Active(); sha != fileSHA(t, bins.v1) {
		t.Fatalf("after rollback %.12s is active, want release one (u1)", sha)
	}
	// Rolling back again returns to u2: previous is now the release left.
	if err := u.Rollback(context.Background()); err != nil || activeVersion(t, root) != "u2" {
		t.Fatalf("second rollback: %v, active %q", err, activeVersion(t, root))
	}
}

func TestVerifiedDrop(t *testing.T) {
	dir := t.TempDir()
	priv, pub, err := release.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "upgrade.pub"), pub, 0o644)
	u, root := newUpgrader(t)
	u.PublicKey = filepath.Join(dir, "upgrade.pub")

	drop(t, root, bins.v2) // unsigned
	if out, _ := u.Run(context.Background()); out != Rejected {
		t.Fatalf("unsigned drop with a key configured: %q, want rejected", out)
	}
	key, err := release.ParsePrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := release.SignFile(bins.v2, key)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(root, "incoming", "lodis.sig"), sig, 0o644)
	drop(t, root, bins.v2)
	if out, err := u.Run(context.Background()); out != Activated {
		t.Fatalf("signed drop: %q, %v; want activated", out, err)
	}
}

func fileSHA(t *testing.T, p string) string {
	t.Helper()
	s, err := buildinfo.FileSHA256(p)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
