package release

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestCorruptStateFileIsQuarantinedAndRebuilt: root keeps a corrupt
// releases.json for inspection and rebuilds the bookkeeping from the release
// directories; anyone else gets a clear error and changes nothing.
func TestCorruptStateFileIsQuarantinedAndRebuilt(t *testing.T) {
	for _, bad := range []string{"{not json", `{"releases":{"x":{"sha256":"x"}}}`, `{"previous":"../../etc"}`} {
		s := newRoot(t, bins.good)
		one, err := s.ImportInstalled()
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(s.Root, "releases.json"), []byte(bad), 0o644)
		var notes []string
		s.Note = func(m string) { notes = append(notes, m) }
		l, err := s.List()
		if os.Geteuid() != 0 {
			if err == nil || !strings.Contains(err.Error(), "releases.json") {
				t.Fatalf("List with %q as a user = %v, want an error naming the file", bad, err)
			}
			continue
		}
		if err != nil || len(l.Releases) != 1 || l.Releases[0].SHA256 != one || l.Releases[0].State != "active" {
			t.Fatalf("List with %q = %+v, %v; want the store rebuilt from releases/", bad, l, err)
		}
		if len(notes) != 1 || !strings.Contains(notes[0], "quarantined as") {
			t.Fatalf("notes %q, want one saying where the corrupt file went", notes)
		}
		kept, _ := filepath.Glob(filepath.Join(s.Root, "rejected", "*-quarantine", "releases.json"))
		if len(kept) != 1 {
			t.Fatalf("corrupt file not kept for inspection: %v", kept)
		}
		if b, _ := os.ReadFile(kept[0]); string(b) != bad {
			t.Fatalf("quarantined file holds %q, want %q", b, bad)
		}
		if err := s.SetPrevious(one); err != nil {
			t.Fatalf("update after the rebuild: %v", err)
		}
	}
}

// TestSecure: root refuses a store that others may write, and takes back or
// quarantines what an older lodis left to user lodis.
func TestSecure(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give files away")
	}
	const uid = 65534
	s := newRoot(t, bins.good)
	one, err := s.ImportInstalled()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Secure(); err != nil {
		t.Fatalf("a root-owned store: %v", err)
	}
	os.Chown(s.Root, uid, uid)
	if _, err := s.Secure(); !errors.Is(err, ErrUntrusted) || !strings.Contains(err.Error(), "systemd-tmpfiles") {
		t.Fatalf("a store that uid %d owns: %v, want a refusal saying how to mend it", uid, err)
	}
	os.Chown(s.Root, 0, 0)
	os.Chmod(filepath.Join(s.Root, "releases"), 0o777)
	if _, err := s.Secure(); !errors.Is(err, ErrUntrusted) {
		t.Fatalf("a world-writable releases/: %v, want a refusal", err)
	}
	os.Chmod(filepath.Join(s.Root, "releases"), 0o755)
	// An older lodis gave the store to user lodis: a genuine release, a
	// forged one, a leftover candidate, a foreign file, current and the
	// bookkeeping.
	forged := filepath.Join(s.Root, "releases", strings.Repeat("f", 64))
	os.MkdirAll(forged, 0o755)
	os.Symlink("/etc/shadow", filepath.Join(forged, "app"))
	cand := filepath.Join(s.Root, "releases", ".candidate-123")
	os.MkdirAll(cand, 0o755)
	os.WriteFile(filepath.Join(s.Root, "evil"), []byte("x"), 0o644)
	for _, p := range []string{filepath.Dir(s.Path(one)), s.Path(one), forged, filepath.Join(s.Root, "evil"), filepath.Join(s.Root, "releases.json"), s.CurrentLink()} {
		os.Lchown(p, uid, uid)
	}
	notes, err := s.Secure()
	if err != nil {
		t.Fatal(err)
	}
	owner := func(p string) int {
		fi, err := os.Lstat(p)
		if err != nil {
			return -1
		}
		return int(fi.Sys().(*syscall.Stat_t).Uid)
	}
	if owner(s.Path(one)) != 0 || owner(filepath.Dir(s.Path(one))) != 0 || !s.Has(one) {
		t.Errorf("the genuine release was not taken back: %s", strings.Join(notes, "; "))
	}
	for _, p := range []string{forged, cand, filepath.Join(s.Root, "evil")} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s still in the store: %s", p, strings.Join(notes, "; "))
		}
	}
	if owner(s.CurrentLink()) != 0 || owner(filepath.Join(s.Root, "releases.json")) != 0 {
		t.Errorf("current or releases.json still another user's: %s", strings.Join(notes, "; "))
	}
	if sha, _, err := s.Active(); err != nil || sha != one {
		t.Errorf("active %.12s, %v; want release one", sha, err)
	}
	q, _ := filepath.Glob(filepath.Join(s.Root, "rejected", "*-quarantine", "*"))
	if len(q) < 3 {
		t.Errorf("quarantine holds %v, want the forged release, the candidate and the foreign file", q)
	}
}

// TestHostileCurrent: root never imports, or hashes, what current points at
// unless it is a regular file root alone may write and every user may read
// and run.
func TestHostileCurrent(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(t.TempDir(), "writable")
	os.WriteFile(other, []byte("#!/bin/sh\n"), 0o777)
	os.Chmod(other, 0o777)
	// A file only root may read: its copy would be world-readable.
	secret := secretFile(t)
	for _, target := range []string{"/dev/zero", fifo, other, secret} {
		s := newRoot(t, target)
		done := make(chan error, 1)
		go func() { _, err := s.ImportInstalled(); done <- err }()
		select {
		case err := <-done:
			if !errors.Is(err, ErrUntrusted) {
				t.Errorf("current -> %s: %v, want a refusal", target, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("current -> %s: ImportInstalled hung", target)
		}
		if des, _ := os.ReadDir(filepath.Join(s.Root, "releases")); len(des) != 0 {
			t.Errorf("current -> %s imported something: %v", target, des)
		}
	}
}
