package rollout

import (
	"errors"
	"fmt"
	"slices"

	"github.com/lodis/lodis/internal/buildinfo"
	"github.com/lodis/lodis/internal/release"
	"github.com/lodis/lodis/internal/systemd"
)

// ErrBadState is wrapped by Store.Load's error for a rollout.json that does
// not hold a roll-out lodis could have written: bad JSON, or a State that
// fails Check.
var ErrBadState = errors.New("not a roll-out lodis wrote")

// maxUnits bounds the worker units of one roll-out: one per port.
const maxUnits = 65535

var phases = []Phase{PhasePending, PhaseRolling, PhaseSupervisor, PhaseDone, PhaseRollingBack, PhaseRolledBack, PhaseFailed}

// Check reports the first thing that makes st something no lodis wrote,
// wrapping ErrBadState: an ID missing or longer than 100 bytes, a kind or
// phase it does not know, From or To not a release's SHA-256, a unit that is
// not a port's worker unit (lodis@PORT.service, PORT from 1 to 65535) in
// Units, Moved or Current, or more units or events than a roll-out keeps. A
// roll-out names only lodis's own units, so that nothing read from the file
// can make root act on another unit.
func (st *State) Check() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrBadState, fmt.Sprintf(format, args...))
	}
	switch {
	case st.ID == "" || len(st.ID) > 100:
		return bad("bad id %q", clip(st.ID))
	case st.Kind != KindUpgrade && st.Kind != KindRollback:
		return bad("bad kind %q: want %s or %s", clip(st.Kind), KindUpgrade, KindRollback)
	case !slices.Contains(phases, st.Phase):
		return bad("bad phase %q", clip(string(st.Phase)))
	case !release.IsSHA256(st.From) || !release.IsSHA256(st.To):
		return bad("from %q and to %q must each be a release's SHA-256", clip(st.From), clip(st.To))
	case len(st.Units) > maxUnits || len(st.Moved) > maxUnits:
		return bad("%d units planned, %d moved: more than there are ports", len(st.Units), len(st.Moved))
	case len(st.Events) > maxEvents:
		return bad("%d events, more than the %d a roll-out keeps", len(st.Events), maxEvents)
	}
	units := append(slices.Clone(st.Units), st.Moved...)
	if st.Current != "" {
		units = append(units, st.Current)
	}
	for _, u := range units {
		if _, typ, ok := systemd.ParseUnit(u); !ok || typ != "service" {
			return bad("unit %q is not a port's worker unit (lodis@PORT.service)", clip(u))
		}
	}
	return nil
}

// Recover is Load for root, before it drives anything: a state file that
// Load refuses as ErrBadState, or an unfinished roll-out between releases
// the store does not hold, is quarantined (release.Store.Quarantine: kept
// for inspection in rejected/) and forgotten — nothing is driven on its
// strength — and note is told so. Other errors (the file cannot be read)
// are returned.
func (s *Store) Recover(note func(string)) (*State, error) {
	st, err := s.Load()
	why := ""
	switch {
	case errors.Is(err, ErrBadState):
		why = err.Error()
	case err != nil:
		return nil, err
	case st == nil:
		return nil, nil
	case !st.Phase.Finished() && (!s.Releases.Has(st.From) || !s.Releases.Has(st.To)):
		why = fmt.Sprintf("roll-out %s, unfinished, from %s to %s: the store does not hold both releases",
			clip(st.ID), buildinfo.ShortSHA(st.From), buildinfo.ShortSHA(st.To))
	default:
		return st, nil
	}
	dst, err := s.Releases.Quarantine(s.Path(), why)
	if err != nil {
		return nil, fmt.Errorf("quarantine %s (%s): %w", s.Path(), why, err)
	}
	if note != nil {
		note(fmt.Sprintf("%s: quarantined as %s; no roll-out is taken up", why, dst))
	}
	return nil, nil
}
