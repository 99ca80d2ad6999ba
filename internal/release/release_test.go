package release

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lodis/lodis/internal/testenv"
)

// bins are real lodis binaries built once for this package's tests.
var bins struct {
	dir                      string
	good, unhealthy, exitNow string
	arm64                    string
}

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "ignore-term" {
		ignoreTerm() // this binary as an app that ignores SIGTERM
	}
	code, err := setup(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "release tests:", err)
		code = 1
	}
	os.RemoveAll(bins.dir)
	os.Exit(code)
}

func setup(m *testing.M) (int, error) {
	repo, err := testenv.RepoRoot()
	if err != nil {
		return 1, err
	}
	bins.dir, err = os.MkdirTemp("", "lodis-release-test-")
	if err != nil {
		return 1, err
	}
	for _, b := range []struct {
		dst  *string
		spec testenv.Spec
	}{
		{&bins.good, testenv.Spec{Version: "t-good"}},
		{&bins.unhealthy, testenv.Spec{Version: "t-unhealthy", Fault: "serve-unhealthy"}},
		{&bins.exitNow, testenv.Spec{Version: "t-exit", Fault: "exit-at-start"}},
		{&bins.arm64, testenv.Spec{Version: "t-arm64", GOARCH: "arm64"}},
	} {
		if *b.dst, err = testenv.Build(repo, bins.dir, b.spec); err != nil {
			return 1, err
		}
	}
	return m.Run(), nil
}

func sum(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// newRoot makes a store whose current points at an installed binary outside
// it, the way tmpfiles.d leaves a fresh installation.
func newRoot(t *testing.T, installed string) *Store {
	t.Helper()
	root := t.TempDir()
	for _, d := range []string{"releases", "incoming", "rejected"} {
		if err := os.Mkdir(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(installed, filepath.Join(root, "current")); err != nil {
		t.Fatal(err)
	}
	return NewStore(root)
}

func stage(t *testing.T, s *Store, src string) *Candidate {
	t.Helper()
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, err := s.Stage(f)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestImportInstalledThenActivateAndList(t *testing.T) {
	s := newRoot(t, bins.good)
	one, err := s.ImportInstalled()
	if err != nil {
		t.Fatal(err)
	}
	if one != sum(t, bins.good) {
		t.Fatalf("release one is %s, want the installed binary's sha %s", one, sum(t, bins.good))
	}
	if link, _ := os.Readlink(s.CurrentLink()); link != "releases/"+one+"/app" {
		t.Fatalf("current -> %q after import, want releases/%s/app", link, one)
	}
	if again, err := s.ImportInstalled(); err != nil || again != one {
		t.Fatalf("second import: %s, %v; want a no-op returning %s", again, err, one)
	}

	c := stage(t, s, bins.unhealthy) // any other binary will do
	if fi, err := os.Stat(c.Path); err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("staged copy: %v, %v; want mode 0755", fi, err)
	}
	if err := s.Commit(c, "t2", "incoming"); err != nil {
		t.Fatal(err)
	}
	if err := s.Activate(c.SHA256); err != nil {
		t.Fatal(err)
	}
	if err := s.SetPrevious(one); err != nil {
		t.Fatal(err)
	}
	active, path, err := s.Active()
	if err != nil || active != c.SHA256 || path != s.Path(c.SHA256) {
		t.Fatalf("Active() = %s, %s, %v; want %s", active, path, err, c.SHA256)
	}
	l, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	states := map[string]string{}
	for _, e := range l.Releases {
		states[e.SHA256] = e.State
	}
	if states[one] != "previous" || states[c.SHA256] != "active" || len(states) != 2 {
		t.Fatalf("List states = %v; want release one previous and the new one active", states)
	}
	if _, err := os.Stat(c.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("candidate dir %s still there after commit", c.Dir)
	}
}

func TestActivateUnknownReleaseChangesNothing(t *testing.T) {
	s := newRoot(t, bins.good)
	before, _ := os.Readlink(s.CurrentLink())
	err := s.Activate(strings.Repeat("a", 64))
	if err == nil || !strings.Contains(err.Error(), "no such release") {
		t.Fatalf("Activate(unknown) = %v, want a no-such-release error", err)
	}
	if after, _ := os.Readlink(s.CurrentLink()); after != before {
		t.Fatalf("current changed from %q to %q", before, after)
	}
}

func TestRejectKeepsTheFileAndTheReason(t *testing.T) {
	s := newRoot(t, bins.good)
	drop := filepath.Join(s.IncomingDir(), ".taken-1")
	os.WriteFile(drop, []byte("not a binary\n"), 0o755)
	sig := drop + ".sig"
	os.WriteFile(sig, []byte("c2ln\n"), 0o644)
	path, err := s.Reject(drop, sig, "", "", "elf: not an ELF executable")
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "not a binary\n" {
		t.Fatalf("rejected file: %q, %v; want the drop's content", b, err)
	}
	if b, _ := os.ReadFile(filepath.Join(filepath.Dir(path), "reason")); string(b) != "elf: not an ELF executable\n" {
		t.Fatalf("reason file = %q", b)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(path), BinaryName+".sig")); err != nil {
		t.Fatalf("signature not kept with the rejected drop: %v", err)
	}
	l, _ := s.List()
	if len(l.Rejected) != 1 || l.Rejected[0].Reason != "elf: not an ELF executable" || l.Rejected[0].Path != path {
		t.Fatalf("rejections = %+v", l.Rejected)
	}
}

func TestMarkRejectedMovesTheReleaseOut(t *testing.T) {
	s := newRoot(t, bins.good)
	one, _ := s.ImportInstalled()
	c := stage(t, s, bins.unhealthy)
	s.Commit(c, "t2", "incoming")
	s.SetPrevious(c.SHA256)
	if err := s.MarkRejected(c.SHA256, "canary unhealthy"); err != nil {
		t.Fatal(err)
	}
	if s.Has(c.SHA256) {
		t.Fatal("a release rejected after roll-out is still offered in releases/")
	}
	r, _ := s.Release(c.SHA256)
	if r == nil || r.Rejected != "canary unhealthy" {
		t.Fatalf("Release = %+v, want Rejected recorded", r)
	}
	if p, _ := s.Previous(); p != "" {
		t.Fatalf("previous still names the rejected release %s", p)
	}
	l, _ := s.List()
	if len(l.Rejected) != 1 || l.Rejected[0].Stage != "rollout" {
		t.Fatalf("rejections = %+v", l.Rejected)
	}
	if b, err := os.ReadFile(filepath.Join(filepath.Dir(l.Rejected[0].Path), "reason")); err != nil || string(b) != "canary unhealthy\n" {
		t.Fatalf("reason file: %q, %v", b, err)
	}
	// The active release is never moved away.
	if err := s.MarkRejected(one, "by hand"); err != nil || !s.Has(one) {
		t.Fatalf("MarkRejected(active) = %v, Has = %v; the active binary must stay", err, s.Has(one))
	}
}

func TestConcurrentUpdatesAreAllKept(t *testing.T) {
	s := newRoot(t, bins.good)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := filepath.Join(s.IncomingDir(), fmt.Sprintf(".taken-%d", i))
			os.WriteFile(p, []byte{byte(i)}, 0o644)
			if _, err := s.Reject(p, "", "", "", fmt.Sprintf("reason %d", i)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	l, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Rejected) != 20 {
		t.Fatalf("%d rejections recorded, want 20: concurrent updates were lost", len(l.Rejected))
	}
}

func TestLockUpgradesSerialises(t *testing.T) {
	s := newRoot(t, bins.good)
	unlock, err := s.LockUpgrades(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := s.LockUpgrades(ctx); err == nil {
		t.Fatal("a second upgrade got the lock while the first held it")
	}
	unlock()
	u2, err := s.LockUpgrades(context.Background())
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	u2()
}

func TestLock(t *testing.T) {
	s := newRoot(t, bins.good)
	unlock, err := s.Lock(context.Background(), ".x.lock", false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lock(context.Background(), ".x.lock", false); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Lock = %v, want ErrLocked", err)
	}
	unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	u2, err := s.Lock(ctx, ".x.lock", true)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	u2()
}

// ignoreTerm serves 200 on every path of fd 3 and ignores SIGTERM: an app
// that does not drain.
func ignoreTerm() {
	signal.Ignore(syscall.SIGTERM)
	l, err := net.FileListener(os.NewFile(3, "http"))
	if err != nil {
		os.Exit(3)
	}
	http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("{}")) }))
	os.Exit(0)
}
