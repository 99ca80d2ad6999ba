package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/lodis/lodis/internal/release"
)

// Store keeps roll-outs beside the release store they move between: the
// roll-out under way, or the last one, in rollout.json (replaced atomically
// on every Save), and the roll-out lock, .rollout.lock, held by whichever
// process drives a roll-out so that two never drive one at once. It is the
// only code that knows those names.
type Store struct {
	Releases *release.Store
}

// NewStore returns the roll-out store of the release store rel.
func NewStore(rel *release.Store) *Store { return &Store{Releases: rel} }

// Path is the state file, e.g. /var/lib/lodis/rollout.json.
func (s *Store) Path() string { return filepath.Join(s.Releases.Root, "rollout.json") }

// Save implements Persister.
func (s *Store) Save(st *State) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := release.WriteFileAtomic(s.Path(), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("save roll-out: %w", err)
	}
	return nil
}

// maxStateFile bounds what is read of rollout.json: a roll-out keeps at
// most maxEvents events, well under this.
const maxStateFile = 4 << 20

// Load returns the persisted State, or nil when there is none. A file that
// does not hold a roll-out lodis wrote — bad JSON, more than 4 MiB, or a
// State that fails Check — is an error wrapping ErrBadState (root mends it
// with Recover). The file is opened without following a link or blocking
// on a FIFO, and must be a regular file.
func (s *Store) Load() (*State, error) {
	b, err := release.ReadStateFile(s.Path(), maxStateFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if errors.Is(err, release.ErrUntrusted) || errors.Is(err, release.ErrTooLarge) {
		return nil, fmt.Errorf("load roll-out %s: %w: %w", s.Path(), ErrBadState, err)
	}
	if err != nil {
		return nil, fmt.Errorf("load roll-out: %w", err)
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("load roll-out %s: %w: bad JSON: %w", s.Path(), ErrBadState, err)
	}
	if err := st.Check(); err != nil {
		return nil, fmt.Errorf("load roll-out %s: %w", s.Path(), err)
	}
	return &st, nil
}

// Lock takes the roll-out lock, waiting until it is free or ctx ends; call
// the returned function to release it.
func (s *Store) Lock(ctx context.Context) (unlock func(), err error) {
	return s.Releases.Lock(ctx, ".rollout.lock", true)
}

// TryLock is Lock without waiting: an error wrapping release.ErrLocked when
// another process holds the lock.
func (s *Store) TryLock() (unlock func(), err error) {
	return s.Releases.Lock(context.Background(), ".rollout.lock", false)
}

// Plan makes the State of a roll-out of kind from release from to release
// to, with the versions the release store knows of them.
func (s *Store) Plan(kind, from, to string, now time.Time) *State {
	st := NewState(kind, from, to, now)
	if r, _ := s.Releases.Release(to); r != nil {
		st.ToVersion = r.Version
	}
	if r, _ := s.Releases.Release(from); r != nil {
		st.FromVersion = r.Version
	}
	return st
}

// Err is the error Runner.Run returns for a finished st: nil when done, a
// *RolledBackError when rolled back or failed; nil for a State not finished.
func (st *State) Err() error {
	if st.Phase == PhaseDone || !st.Phase.Finished() {
		return nil
	}
	return &RolledBackError{Reason: st.Reason, Failed: st.Phase == PhaseFailed}
}
