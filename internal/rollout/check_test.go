package rollout

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lodis/lodis/internal/release"
)

func shaOf(c byte) string { return strings.Repeat(string(c), 64) }

// TestCheck: a State names only releases by SHA-256 and only port worker
// units; anything else is ErrBadState.
func TestCheck(t *testing.T) {
	good := func() *State {
		st := NewState(KindUpgrade, shaOf('a'), shaOf('b'), time.Now())
		st.Phase, st.Units, st.Moved, st.Current = PhaseRolling, []string{"lodis@8080.service", "lodis@8081.service"}, []string{"lodis@8080.service"}, "lodis@8081.service"
		return st
	}
	if err := good().Check(); err != nil {
		t.Fatalf("a genuine State: %v", err)
	}
	for name, spoil := range map[string]func(*State){
		"empty":           func(st *State) { *st = State{} },
		"no id":           func(st *State) { st.ID = "" },
		"unknown kind":    func(st *State) { st.Kind = "sideways" },
		"unknown phase":   func(st *State) { st.Phase = "" },
		"from not a sha":  func(st *State) { st.From = "../../etc/shadow" },
		"to not a sha":    func(st *State) { st.To = strings.ToUpper(shaOf('b')) },
		"foreign unit":    func(st *State) { st.Units = append(st.Units, "ssh.service") },
		"foreign moved":   func(st *State) { st.Moved = []string{"systemd-journald.service"} },
		"foreign current": func(st *State) { st.Current = "lodis-upgrade.service" },
		"socket unit":     func(st *State) { st.Current = "lodis@8080.socket" },
		"port 0":          func(st *State) { st.Units = []string{"lodis@0.service"} },
		"port 70000":      func(st *State) { st.Units = []string{"lodis@70000.service"} },
		"alt unit":        func(st *State) { st.Units = []string{"lodis-alt@8080.service"} },
		"too many events": func(st *State) { st.Events = make([]Event, maxEvents+1) },
	} {
		st := good()
		spoil(st)
		if err := st.Check(); !errors.Is(err, ErrBadState) {
			t.Errorf("%s: Check = %v, want ErrBadState", name, err)
		}
	}
}

// TestRecover: a rollout.json that holds no roll-out lodis wrote, or an
// unfinished one between releases the store lacks, is quarantined and
// forgotten; a good one is returned; none is nil.
func TestRecover(t *testing.T) {
	root := t.TempDir()
	for _, sha := range []string{shaOf('a'), shaOf('b')} {
		os.MkdirAll(filepath.Join(root, "releases", sha), 0o755)
		os.WriteFile(filepath.Join(root, "releases", sha, "app"), []byte("x"), 0o755)
	}
	s := NewStore(release.NewStore(root))
	if st, err := s.Recover(nil); st != nil || err != nil {
		t.Fatalf("no file: %v, %v", st, err)
	}
	genuine := NewState(KindUpgrade, shaOf('a'), shaOf('b'), time.Now())
	genuine.Phase = PhaseRolling
	if err := s.Save(genuine); err != nil {
		t.Fatal(err)
	}
	if st, err := s.Recover(nil); err != nil || st == nil || st.ID != genuine.ID {
		t.Fatalf("a genuine roll-out: %+v, %v", st, err)
	}
	missing := NewState(KindUpgrade, shaOf('a'), shaOf('c'), time.Now())
	missing.Phase = PhaseRolling
	for name, content := range map[string][]byte{
		"truncated":       []byte(`{"id":"x","kind":"upg`),
		"garbage":         []byte("\x00\xff\x1b[2J"),
		"empty object":    []byte("{}"),
		"foreign unit":    []byte(`{"id":"x","kind":"upgrade","from":"` + shaOf('a') + `","to":"` + shaOf('b') + `","phase":"rolling","units":["ssh.service"]}`),
		"missing release": mustJSON(t, s, missing),
	} {
		if err := os.WriteFile(s.Path(), content, 0o644); err != nil {
			t.Fatal(err)
		}
		var notes []string
		st, err := s.Recover(func(m string) { notes = append(notes, m) })
		if st != nil || err != nil || len(notes) != 1 || !strings.Contains(notes[0], "quarantined as") {
			t.Errorf("%s: %+v, %v, notes %q; want it quarantined", name, st, err, notes)
		}
		if _, err := os.Stat(s.Path()); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: rollout.json still there", name)
		}
	}
	kept, _ := filepath.Glob(filepath.Join(root, "rejected", "*-quarantine", "rollout.json"))
	if len(kept) != 5 {
		t.Errorf("%d quarantined files kept, want 5", len(kept))
	}
	// A link is never followed.
	os.Symlink("/etc/passwd", s.Path())
	if _, err := s.Load(); !errors.Is(err, ErrBadState) {
		t.Errorf("rollout.json as a link: Load = %v, want ErrBadState", err)
	}
}

func mustJSON(t *testing.T, s *Store, st *State) []byte {
	t.Helper()
	if err := s.Save(st); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	return b
}
