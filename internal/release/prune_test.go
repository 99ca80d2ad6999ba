package release

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// TestPrune: of the releases, the newest imports stay up to keep, and
// always the active and the previous one however old; of rejected/, the
// newest keepRejected entries. A pruned release that was rejected stays
// known (the same file dropped again is refused at once).
func TestPrune(t *testing.T) {
	s := newRoot(t, bins.good)
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s.Now = func() time.Time { at = at.Add(time.Minute); return at }
	var shas []string // oldest first
	for i := range 6 {
		c, err := s.Stage(bytes.NewReader([]byte(fmt.Sprintf("#!/bin/sh\n# release %d\n", i))))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Commit(c, "", "incoming"); err != nil {
			t.Fatal(err)
		}
		shas = append(shas, c.SHA256)
	}
	// The oldest is active, the second oldest previous, the third rejected.
	if err := s.Activate(shas[0]); err != nil {
		t.Fatal(err)
	}
	if err := s.SetPrevious(shas[1]); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkRejected(shas[2], "failed its roll-out"); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		os.MkdirAll(filepath.Join(s.Root, "rejected", fmt.Sprintf("2026010%dT000000Z-x", i+1)), 0o750)
	}
	removed, err := s.Prune(3, 2)
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	for _, sha := range shas {
		if s.Has(sha) {
			kept = append(kept, sha)
		}
	}
	// Active, previous, and the newest other one.
	if want := []string{shas[0], shas[1], shas[5]}; !slices.Equal(kept, want) {
		t.Fatalf("kept %.12v, want %.12v (removed %v)", kept, want, removed)
	}
	if r, _ := s.Release(shas[2]); r == nil || r.Rejected == "" {
		t.Errorf("the rejected release was forgotten: %+v", r)
	}
	if r, _ := s.Release(shas[3]); r != nil {
		t.Errorf("a pruned release is still in releases.json: %+v", r)
	}
	des, _ := os.ReadDir(filepath.Join(s.Root, "rejected"))
	if len(des) != 2 {
		t.Fatalf("rejected/ holds %d entries, want the newest 2", len(des))
	}
	if des[1].Name() != "20260105T000000Z-x" && des[0].Name() != "20260105T000000Z-x" {
		t.Errorf("rejected/ kept %v, want the newest", des)
	}
	if _, err := s.Prune(0, -1); err != nil {
		t.Fatal(err)
	}
	if s.Has(shas[0]) == false || s.Has(shas[1]) == false {
		t.Error("no-pruning settings removed a release")
	}
}
