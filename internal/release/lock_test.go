package release

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// secretFile is a file only root may read, with content of its own.
func secretFile(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte("root's secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestHostileLockIsQuarantined: a lock file that is a link (to a file root
// owns), a FIFO or a directory is never followed or waited on: root moves
// it aside and locks a fresh file.
func TestHostileLockIsQuarantined(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	secret := secretFile(t)
	for _, c := range []struct {
		name string
		make func(path string) error
	}{
		{"link", func(p string) error { return os.Symlink(secret, p) }},
		{"dangling link", func(p string) error { return os.Symlink("/nonexistent/lock", p) }},
		{"fifo", func(p string) error { return syscall.Mkfifo(p, 0o600) }},
		{"directory", func(p string) error { return os.Mkdir(p, 0o700) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newRoot(t, bins.good)
			var notes []string
			s.Note = func(m string) { notes = append(notes, m) }
			lock := filepath.Join(s.Root, ".upgrade.lock")
			if err := c.make(lock); err != nil {
				t.Fatal(err)
			}
			unlock, err := s.LockUpgrades(context.Background())
			if err != nil {
				t.Fatalf("LockUpgrades: %v", err)
			}
			unlock()
			if fi, err := os.Lstat(lock); err != nil || !fi.Mode().IsRegular() {
				t.Fatalf("the lock is %v, %v; want a fresh regular file", fi, err)
			}
			if len(notes) != 1 || !strings.Contains(notes[0], "quarantined") {
				t.Errorf("notes %q, want one saying the lock was quarantined", notes)
			}
			if fi, _ := os.Stat(secret); fi.Mode().Perm() != 0o600 || fi.Size() != int64(len("root's secret\n")) {
				t.Errorf("the file the link named changed: %v", fi)
			}
		})
	}
}
