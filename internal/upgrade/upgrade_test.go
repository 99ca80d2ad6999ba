package upgrade

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/lodis/lodis/internal/buildinfo"
	"github.com/lodis/lodis/internal/testbin"
	"github.com/lodis/lodis/release"
	"github.com/lodis/lodis/rollout"
)

var bins struct{ dir, v1, v2, v3, bad string }

func TestMain(m *testing.M) {
	code := 1
	repo, err := testbin.RepoRoot()
	if err == nil {
		bins.dir, err = os.MkdirTemp("", "lodis-upgrade-test-")
	}
	for _, b := range []struct {
		dst  *string
		spec testbin.Spec
	}{
		{&bins.v1, testbin.Spec{Version: "u1"}}, {&bins.v2, testbin.Spec{Version: "u2"}},
		{&bins.v3, testbin.Spec{Version: "u3"}}, {&bins.bad, testbin.Spec{Version: "u-bad", Fault: "selftest-fails"}},
	} {
		if err == nil {
			*b.dst, err = testbin.Build(repo, bins.dir, b.spec)
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

func (idle) Running(context.Context) ([]string, error)              { return nil, nil }
func (idle) Listening(context.Context) ([]string, error)            { return nil, nil }
func (idle) Restart(context.Context, string) error                  { return nil }
func (idle) Health(context.Context, string) (rollout.Health, error) { return rollout.Health{}, nil }
func (idle) RestartSupervisor(context.Context, bool) error          { return nil }

func newUpgrader(t *testing.T) (*Upgrader, string) {
	t.Helper()
	root := t.TempDir()
	for _, d := range []string{"releases", "incoming", "rejected"} {
		os.Mkdir(filepath.Join(root, d), 0o755)
	}
	os.Symlink(bins.v1, filepath.Join(root, "current"))
	log := logrus.New()
	log.SetOutput(io.Discard)
	return &Upgrader{Config: Config{Root: root, Settle: 50 * time.Millisecond, Sandbox: "none",
		CheckTimeout: 10 * time.Second, CanarySoak: time.Millisecond}, Log: log, Ops: idle{}}, root
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
	if len(l.Rejected) != 1 || !strings.Contains(l.Rejected[0].Reason, "selftest") {
		t.Fatalf("rejections %+v, want the selftest failure", l.Rejected)
	}
	if p, _ := release.NewStore(root).Previous(); p == "" {
		t.Fatal("no previous release recorded after an upgrade")
	}
	if des, _ := os.ReadDir(filepath.Join(root, "incoming")); len(des) != 0 {
		t.Fatalf("left in incoming: %v", des)
	}
}

// TestNewestDropWins: a drop that arrives while another is validated
// supersedes it; only the newest is rolled out.
func TestNewestDropWins(t *testing.T) {
	u, root := newUpgrader(t)
	drop(t, root, bins.v2)
	go func() {
		// Lands while u2 is taken and validated.
		for {
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
	st, _ := (&rollout.FileStore{Path: filepath.Join(root, "rollout.json")}).Load()
	if st == nil || st.ToVersion != "u3" || st.FromVersion != "" && st.FromVersion != "u1" {
		t.Fatalf("last roll-out %+v, want one from u1 to u3", st)
	}
}

func TestReleasesAndRollbackCommands(t *testing.T) {
	u, root := newUpgrader(t)
	drop(t, root, bins.v2)
	if _, err := u.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := printReleases(&b, root, false); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "u2") || !strings.Contains(b.String(), "active") || !strings.Contains(b.String(), "previous") {
		t.Fatalf("lodis releases:\n%s", b.String())
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

func TestBadInput(t *testing.T) {
	_, root := newUpgrader(t)
	for _, tc := range []struct {
		name string
		run  func([]string, io.Writer) int
		args []string
		code int
		want string
	}{
		{"upgrade unknown flag", Main, []string{"-bogus"}, 2, "flag provided but not defined: -bogus"},
		{"upgrade bad sandbox", Main, []string{"-sandbox", "docker"}, 2, `bad -sandbox "docker": want systemd or none`},
		{"upgrade negative settle", Main, []string{"-settle", "-1s"}, 2, "bad -settle -1s"},
		{"upgrade extra argument", Main, []string{"now"}, 2, `unexpected argument "now"`},
		{"upgrade bad log level", Main, []string{"-log-level", "loud"}, 2, `bad log level "loud"`},
		{"upgrade unreadable key", Main, []string{"-root", root, "-public-key", writeTemp(t, "not a key")}, 1, "not an ed25519 public key"},
		{"releases bad root", Releases, []string{"-root", filepath.Join(root, "nope")}, 1, "lodis releases: read"},
		{"rollback with no previous", Rollback, []string{"-root", root}, 1, "no previous release to return to"},
		{"rollback to an unknown release", Rollback, []string{"-root", root, "-to", "ffff"}, 1, `bad -to "ffff": no release in the store starts with it`},
		{"sign without a binary", Sign, nil, 2, "want exactly one BINARY"},
		{"sign with a bad key", Sign, []string{"-key", writeTemp(t, "nope"), bins.v1}, 1, `not a PEM "PRIVATE KEY"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			code := tc.run(tc.args, &stderr)
			if code != tc.code || !strings.Contains(stderr.String(), tc.want) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", code, stderr.String(), tc.code, tc.want)
			}
			if n := strings.Count(strings.TrimSpace(stderr.String()), "\n"); tc.code == 2 && n > 0 {
				t.Fatalf("usage error takes %d lines, want one: %q", n+1, stderr.String())
			}
		})
	}
	// Nothing was changed by any of the bad inputs.
	if des, _ := os.ReadDir(filepath.Join(root, "releases")); len(des) > 1 {
		t.Fatalf("bad input changed the store: %v", des)
	}
}

func TestKeygenSignAndVerifiedDrop(t *testing.T) {
	dir := t.TempDir()
	var stderr bytes.Buffer
	if code := Keygen([]string{"-dir", dir}, &stderr); code != 0 {
		t.Fatalf("keygen: %d %s", code, stderr.String())
	}
	if code := Keygen([]string{"-dir", dir}, &stderr); code != 1 || !strings.Contains(stderr.String(), "not overwriting a key") {
		t.Fatalf("second keygen: %d %s; want a refusal to overwrite", code, stderr.String())
	}
	u, root := newUpgrader(t)
	u.PublicKey = filepath.Join(dir, "upgrade.pub")

	drop(t, root, bins.v2) // unsigned
	if out, _ := u.Run(context.Background()); out != Rejected {
		t.Fatalf("unsigned drop with a key configured: %q, want rejected", out)
	}
	sig := filepath.Join(dir, "lodis.sig")
	if code := Sign([]string{"-key", filepath.Join(dir, "upgrade.key"), "-o", sig, bins.v2}, &stderr); code != 0 {
		t.Fatalf("sign: %d %s", code, stderr.String())
	}
	b, _ := os.ReadFile(sig)
	os.WriteFile(filepath.Join(root, "incoming", "lodis.sig"), b, 0o644)
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

func writeTemp(t *testing.T, content string) string {
	p := filepath.Join(t.TempDir(), "f")
	os.WriteFile(p, []byte(content), 0o600)
	return p
}
