package drop

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lodis/lodis/internal/release"
	"github.com/lodis/lodis/internal/rollout"
)

// syncBuffer is a bytes.Buffer safe for a waiter and a test reading it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// fixture is a release store in a temporary directory with release one
// active, as lodis leaves it after installation and a first upgrade.
type fixture struct {
	root  string
	store *release.Store
	v1    string // sha256 of the active release
	dir   string // where the files to drop are made
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{root: t.TempDir(), dir: t.TempDir()}
	f.store = release.NewStore(f.root)
	if err := os.MkdirAll(f.store.IncomingDir(), 0o750); err != nil {
		t.Fatal(err)
	}
	f.v1 = f.commit(t, []byte("release one"), "v1")
	if err := f.store.Activate(f.v1); err != nil {
		t.Fatal(err)
	}
	return f
}

// commit puts content into the store as an accepted release.
func (f *fixture) commit(t *testing.T, content []byte, version string) string {
	t.Helper()
	c, err := f.store.Stage(bytes.NewReader(content))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.store.Commit(c, version, "incoming"); err != nil {
		t.Fatal(err)
	}
	return c.SHA256
}

// file writes a file to drop and returns its path and sha256.
func (f *fixture) file(t *testing.T, name string, content []byte) (string, string) {
	t.Helper()
	p := filepath.Join(f.dir, name)
	if err := os.WriteFile(p, content, 0o755); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(content)
	return p, hex.EncodeToString(sum[:])
}

func (f *fixture) incoming(name string) string {
	return filepath.Join(f.store.IncomingDir(), name)
}

// drop runs lodis drop as root against the fixture's store.
func (f *fixture) drop(ctx context.Context, out *syncBuffer, args ...string) int {
	return f.dropAs(ctx, 0, out, args...)
}

func (f *fixture) dropAs(ctx context.Context, euid int, out *syncBuffer, args ...string) int {
	args = append([]string{"--root", f.root}, args...)
	return run(ctx, args, env{euid: func() int { return euid }, now: time.Now, stderr: out})
}

// take waits for the drop to appear in incoming/ and moves it away, as
// lodis upgrade's intake does; it returns the bytes taken.
func (f *fixture) take(t *testing.T) []byte {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		des, _ := os.ReadDir(f.store.IncomingDir())
		for _, de := range des {
			if n := de.Name(); !strings.HasPrefix(n, ".") && !strings.HasSuffix(n, ".sig") {
				b, err := os.ReadFile(f.incoming(n))
				if err != nil {
					t.Error(err)
				}
				if err := os.Rename(f.incoming(n), f.incoming(".taken-test")); err != nil {
					t.Error(err)
				}
				return b
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Error("the drop never appeared in incoming/")
	return nil
}

func oneLineOf(t *testing.T, out string) string {
	t.Helper()
	out = strings.TrimSpace(out)
	if strings.Contains(out, "\n") {
		t.Errorf("want one line of error, got:\n%s", out)
	}
	return out
}

// TestBadInputIsOneClearLine: every bad invocation ends with exit 2 (1 for a
// drop that cannot be made), one line naming the problem, and nothing
// dropped; a drop already pending is kept as it was.
func TestBadInputIsOneClearLine(t *testing.T) {
	f := newFixture(t)
	good, _ := f.file(t, "lodis-v2", []byte("release two"))
	empty, _ := f.file(t, "empty", nil)
	cases := []struct {
		name string
		euid int
		args []string
		code int
		want string
	}{
		{"no file", 0, nil, 2, "want the FILE to drop"},
		{"two files", 0, []string{good, good}, 2, "unexpected argument"},
		{"unknown flag", 0, []string{"--bogus", good}, 2, "flag provided but not defined: -bogus"},
		{"unknown flag after FILE", 0, []string{good, "--bogus"}, 2, "flag provided but not defined: -bogus"},
		{"bad timeout", 0, []string{"--wait", "--timeout", "soon", good}, 2, `invalid value "soon"`},
		{"negative timeout", 0, []string{"--timeout", "-1s", good}, 2, "bad -timeout -1s"},
		{"missing file", 0, []string{filepath.Join(f.dir, "nope")}, 2, "no such file or directory"},
		{"directory", 0, []string{f.dir}, 2, "is not a regular file"},
		{"empty file", 0, []string{empty}, 2, "is empty"},
		{"missing signature", 0, []string{"--sig", filepath.Join(f.dir, "nope.sig"), good}, 2, "nope.sig: no such file"},
		{"not root", 1000, []string{good}, 2, "must run as root"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out syncBuffer
			code := f.dropAs(context.Background(), tc.euid, &out, tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d; output: %s", code, tc.code, out.String())
			}
			line := oneLineOf(t, out.String())
			if !strings.HasPrefix(line, "lodis drop: ") || !strings.Contains(line, tc.want) {
				t.Errorf("output %q, want a line starting \"lodis drop: \" that says %q", line, tc.want)
			}
			if des, _ := os.ReadDir(f.store.IncomingDir()); len(des) != 0 {
				t.Errorf("incoming/ holds %d entries after a refused drop", len(des))
			}
		})
	}

	t.Run("no drop directory", func(t *testing.T) {
		var out syncBuffer
		code := run(context.Background(), []string{"--root", t.TempDir(), good},
			env{euid: func() int { return 0 }, now: time.Now, stderr: &out})
		if line := oneLineOf(t, out.String()); code != 1 || !strings.Contains(line, "is lodis installed here?") {
			t.Errorf("exit %d, output %q; want 1 and a word on the missing drop directory", code, line)
		}
	})

	for _, pending := range []string{"lodis-v2", "lodis-v2.sig"} {
		t.Run("pending "+pending, func(t *testing.T) {
			if err := os.WriteFile(f.incoming(pending), []byte("someone else's drop"), 0o755); err != nil {
				t.Fatal(err)
			}
			defer os.Remove(f.incoming(pending))
			var out syncBuffer
			code := f.drop(context.Background(), &out, good)
			if line := oneLineOf(t, out.String()); code != 1 || !strings.Contains(line, "a drop is pending") {
				t.Errorf("exit %d, output %q; want 1 and a drop is pending", code, line)
			}
			if b, _ := os.ReadFile(f.incoming(pending)); string(b) != "someone else's drop" {
				t.Errorf("the pending drop was changed: %q", b)
			}
			if des, _ := os.ReadDir(f.store.IncomingDir()); len(des) != 1 {
				t.Errorf("incoming/ holds %d entries, want only the pending drop", len(des))
			}
		})
	}
}

// TestDropIsComplete: without --wait the file lands as incoming/NAME, whole
// and executable, its signature beside it, and no temporary file is left.
func TestDropIsComplete(t *testing.T) {
	f := newFixture(t)
	content := bytes.Repeat([]byte("release two "), 100_000)
	p, sha := f.file(t, "lodis-v2", content)
	if err := os.WriteFile(p+".sig", []byte("signature"), 0o600); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(f.dir, "other.sig")
	if err := os.WriteFile(other, []byte("other signature"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, sig string
		args      []string
	}{
		{"FILE.sig beside it", "signature", []string{p}},
		{"--sig after FILE", "other signature", []string{p, "--sig", other}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out syncBuffer
			if code := f.drop(context.Background(), &out, tc.args...); code != 0 {
				t.Fatalf("exit %d: %s", code, out.String())
			}
			if !strings.Contains(out.String(), sha[:12]) {
				t.Errorf("output does not name the release's sha256 %s: %s", sha[:12], out.String())
			}
			b, err := os.ReadFile(f.incoming("lodis-v2"))
			if err != nil || !bytes.Equal(b, content) {
				t.Fatalf("incoming/lodis-v2: %d bytes (%v), want the %d dropped", len(b), err, len(content))
			}
			if fi, _ := os.Stat(f.incoming("lodis-v2")); fi.Mode().Perm() != 0o755 {
				t.Errorf("incoming/lodis-v2 has mode %o, want 755", fi.Mode().Perm())
			}
			if s, _ := os.ReadFile(f.incoming("lodis-v2.sig")); string(s) != tc.sig {
				t.Errorf("incoming/lodis-v2.sig = %q, want %q", s, tc.sig)
			}
			des, _ := os.ReadDir(f.store.IncomingDir())
			if len(des) != 2 {
				t.Errorf("incoming/ holds %v, want lodis-v2 and lodis-v2.sig only", des)
			}
			os.Remove(f.incoming("lodis-v2"))
			os.Remove(f.incoming("lodis-v2.sig"))
		})
	}
}

// TestWaitOutcomes plays lodis upgrade's part (take the drop, then record
// what became of it, as release and rollout do) and checks the exit status
// and the line --wait ends with.
func TestWaitOutcomes(t *testing.T) {
	cases := []struct {
		name    string
		content string
		// upgrade acts on the taken release sha as lodis upgrade would.
		upgrade func(t *testing.T, f *fixture, sha string)
		code    int
		want    string
	}{
		{"rolled out", "release two", func(t *testing.T, f *fixture, sha string) {
			st := f.rollout(t, sha, "v2")
			f.save(t, st)                      // pending
			time.Sleep(300 * time.Millisecond) // seen in progress, not as an outcome
			if err := f.store.Activate(sha); err != nil {
				t.Error(err)
			}
			st.Phase, st.Moved, st.Units = rollout.PhaseRolling, []string{"lodis@8080.service"}, []string{"lodis@8080.service", "lodis@8081.service"}
			f.save(t, st)
			time.Sleep(300 * time.Millisecond)
			st.Phase, st.Finished = rollout.PhaseDone, time.Now()
			f.save(t, st)
		}, 0, "rolled out: release v2"},
		{"rejected by validation", "release two", func(t *testing.T, f *fixture, sha string) {
			p := f.incoming(".taken-test")
			if _, err := f.store.Reject(p, "", sha, "", "selftest: exit status 1"); err != nil {
				t.Error(err)
			}
		}, 1, "rejected by validation: release " + "%SHA12%" + ": selftest: exit status 1"},
		{"rolled back", "release two", func(t *testing.T, f *fixture, sha string) {
			st := f.rollout(t, sha, "v2")
			st.Phase = rollout.PhaseRollingBack
			f.save(t, st)
			time.Sleep(300 * time.Millisecond)
			if err := f.store.MarkRejected(sha, "/__/health answered 503"); err != nil {
				t.Error(err)
			}
			time.Sleep(300 * time.Millisecond) // the rejection alone is not the end: the rollback is
			st.Phase, st.Reason, st.Finished = rollout.PhaseRolledBack, "/__/health answered 503", time.Now()
			f.save(t, st)
		}, 1, "rolled back: release v2"},
		{"flipped before its roll-out is recorded, then rolled back", "release two", func(t *testing.T, f *fixture, sha string) {
			// lodis upgrade flips current first and records the roll-out
			// after it has listed the running workers: the release is active
			// meanwhile, with the last roll-out still another release's.
			old := f.rollout(t, f.v1, "v1") // the roll-out before, another release's
			old.Started = time.Now().Add(-time.Minute)
			old.Phase, old.Finished = rollout.PhaseDone, time.Now().Add(-50*time.Second)
			f.save(t, old)
			if err := f.store.Activate(sha); err != nil {
				t.Error(err)
			}
			time.Sleep(600 * time.Millisecond) // not "active already": its roll-out has not begun
			st := f.rollout(t, sha, "v2")
			st.Phase, st.Units = rollout.PhaseRolling, []string{"lodis@8080.service"}
			f.save(t, st)
			time.Sleep(300 * time.Millisecond)
			if err := f.store.Activate(f.v1); err != nil {
				t.Error(err)
			}
			st.Phase, st.Reason, st.Finished = rollout.PhaseRolledBack, "canary failed its health check", time.Now()
			f.save(t, st)
		}, 1, "rolled back: release v2"},
		{"rollback incomplete", "release two", func(t *testing.T, f *fixture, sha string) {
			st := f.rollout(t, sha, "v2")
			st.Phase, st.Reason, st.Finished = rollout.PhaseFailed, "restart lodis@8080.service: job failed", time.Now()
			f.save(t, st)
		}, 1, "rollback is incomplete: restart lodis@8080.service"},
		{"active already", "release one", func(t *testing.T, f *fixture, sha string) {
			os.Remove(f.incoming(".taken-test")) // lodis upgrade: the drop is the active release
		}, 0, "is the active release already"},
		{"done, then another release made active", "release two", func(t *testing.T, f *fixture, sha string) {
			st := f.rollout(t, sha, "v2")
			st.Phase, st.Finished = rollout.PhaseDone, time.Now()
			f.save(t, st) // but current still points at release one
		}, 1, "but the active release is now"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			p, sha := f.file(t, "lodis-new", []byte(tc.content))
			// Records older than the drop must not be taken for its outcome:
			// an old rejection and an old finished roll-out of the same release.
			if tc.content != "release one" {
				f.commit(t, []byte(tc.content), "v2")
				old := f.rollout(t, sha, "v2")
				old.Started = time.Now().Add(-time.Hour)
				old.Phase, old.Reason = rollout.PhaseRolledBack, "an old failure"
				f.save(t, old)
				copyPath, _ := f.file(t, "old-copy", []byte(tc.content))
				f.store.Now = func() time.Time { return time.Now().Add(-time.Hour) }
				if _, err := f.store.Reject(copyPath, "", sha, "v2", "an old rejection"); err != nil {
					t.Fatal(err)
				}
				f.store.Now = time.Now
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			done := make(chan struct{})
			go func() {
				defer close(done)
				f.take(t)
				time.Sleep(300 * time.Millisecond) // seen as taken first
				tc.upgrade(t, f, sha)
			}()
			var out syncBuffer
			code := f.drop(ctx, &out, "--wait", "--timeout", "15s", p)
			<-done
			lines := strings.Split(strings.TrimSpace(out.String()), "\n")
			last := lines[len(lines)-1]
			want := strings.ReplaceAll(tc.want, "%SHA12%", sha[:12])
			if code != tc.code || !strings.Contains(last, want) {
				t.Errorf("exit %d, last line %q; want exit %d and %q\n%s", code, last, tc.code, want, out.String())
			}
			if strings.Contains(out.String(), "an old") {
				t.Errorf("an old record was taken for this drop's outcome:\n%s", out.String())
			}
		})
	}
}

// TestWaitTimesOut: a drop nothing takes ends --wait after --timeout with
// exit 1 and says that the drop still waits in incoming/.
func TestWaitTimesOut(t *testing.T) {
	f := newFixture(t)
	p, _ := f.file(t, "lodis-v2", []byte("release two"))
	var out syncBuffer
	start := time.Now()
	code := f.drop(context.Background(), &out, "--wait", "--timeout", "700ms", p)
	took := time.Since(start)
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	last := lines[len(lines)-1]
	if code != 1 || !strings.Contains(last, "timed out after 700ms") || !strings.Contains(last, "waits in") {
		t.Errorf("exit %d, last line %q; want 1, timed out, and that the drop waits in incoming/", code, last)
	}
	if took < 700*time.Millisecond || took > 5*time.Second {
		t.Errorf("--timeout 700ms returned after %s", took)
	}
	if _, err := os.Stat(f.incoming("lodis-v2")); err != nil {
		t.Errorf("the drop is gone after a timeout: %v", err)
	}
}

// rollout makes the State of a roll-out from release one to sha, started now.
func (f *fixture) rollout(t *testing.T, sha, version string) *rollout.State {
	t.Helper()
	st := rollout.NewState(rollout.KindUpgrade, f.v1, sha, time.Now())
	st.ToVersion, st.FromVersion = version, "v1"
	return st
}

func (f *fixture) save(t *testing.T, st *rollout.State) {
	t.Helper()
	if err := rollout.NewStore(f.store).Save(st); err != nil {
		t.Error(err)
	}
}
