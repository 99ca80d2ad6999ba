package release

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestSecureMendsCurrent: whatever current is — missing, a link to a file
// only root may read, to a FIFO, to a device, relative to outside the
// store, another user's link to outside it — Secure quarantines it and
// rebuilds it onto the release activated last; with no release yet, onto
// the installed lodis (this binary).
func TestSecureMendsCurrent(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	secret := secretFile(t)
	for _, c := range []struct {
		name   string
		target string // "" for no current at all
		owner  int
	}{
		{"missing", "", 0},
		{"root-only file", secret, 0},
		{"fifo", fifo, 0},
		{"device", "/dev/zero", 0},
		{"relative outside the store", "../../etc/passwd", 0},
		{"another user's link", bins.good, 65534},
		{"another user's link to a secret", secret, 65534},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newRoot(t, bins.good)
			one, err := s.ImportInstalled()
			if err != nil {
				t.Fatal(err)
			}
			os.Remove(s.CurrentLink())
			if c.target != "" {
				os.Symlink(c.target, s.CurrentLink())
				os.Lchown(s.CurrentLink(), c.owner, c.owner)
			}
			notes, err := s.Secure()
			if err != nil {
				t.Fatalf("Secure: %v", err)
			}
			if sha, path, err := s.Active(); err != nil || sha != one || !strings.HasPrefix(path, filepath.Join(s.Root, "releases")) {
				t.Fatalf("active %.12s at %s, %v; want release one; notes %q", sha, path, err, notes)
			}
			if c.target != "" && !strings.Contains(strings.Join(notes, "\n"), "quarantined current") {
				t.Errorf("notes %q do not say current was quarantined", notes)
			}
			if !strings.Contains(strings.Join(notes, "\n"), "rebuilt current") {
				t.Errorf("notes %q do not say current was rebuilt", notes)
			}
			q, _ := filepath.Glob(filepath.Join(s.Root, "rejected", "*-quarantine", "current"))
			if c.target != "" && len(q) != 1 {
				t.Errorf("the bad current was not kept for inspection: %v", q)
			}
			if fi, _ := os.Stat(secret); fi.Mode().Perm() != 0o600 {
				t.Errorf("the secret's mode changed: %v", fi.Mode())
			}
			if des, _ := os.ReadDir(filepath.Join(s.Root, "releases")); len(des) != 1 {
				t.Errorf("releases/ holds %d entries, want release one alone", len(des))
			}
		})
	}
	t.Run("first install", func(t *testing.T) {
		s := newRoot(t, fifo)
		notes, err := s.Secure()
		if err != nil {
			t.Fatalf("Secure: %v", err)
		}
		self, _ := os.Executable()
		self, _ = filepath.EvalSymlinks(self)
		if target, _ := os.Readlink(s.CurrentLink()); target != self {
			t.Fatalf("current → %s, want the installed binary %s; notes %q", target, self, notes)
		}
	})
	t.Run("a good current stays", func(t *testing.T) {
		s := newRoot(t, bins.good)
		notes, err := s.Secure()
		if target, _ := os.Readlink(s.CurrentLink()); err != nil || target != bins.good || len(notes) != 0 {
			t.Fatalf("current → %s, %v, notes %q; want it left alone", target, err, notes)
		}
	})
}
