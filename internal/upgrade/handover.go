package upgrade

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/lodis/lodis/internal/buildinfo"
	"github.com/lodis/lodis/release"
	"github.com/lodis/lodis/rollout"
	"github.com/lodis/lodis/supervisor"
)

// pollInterval is how often the outcome of a handed-over roll-out is asked.
const pollInterval = 250 * time.Millisecond

// errNoSupervisor says no supervisor takes roll-outs: drive it here.
type errNoSupervisor struct{ why string }

func (e errNoSupervisor) Error() string { return e.why }

// rollOut moves every running worker to st.To: it hands the roll-out to
// the supervisor and waits for its outcome, or, when no supervisor takes
// it, drives it here and says so in the log. The error is a
// *rollout.RolledBackError when the roll-out was rolled back.
func (u *Upgrader) rollOut(ctx context.Context, st *rollout.State) error {
	if u.StatusSocket != "" {
		err := u.handOver(ctx, st)
		var no errNoSupervisor
		if !errors.As(err, &no) {
			return err
		}
		u.Log.WithField("why", no.why).Warn("no supervisor drives roll-outs here: driving the roll-out in this process")
	}
	return u.drive(ctx, st)
}

// drive runs st here, under the roll-out lock (a supervisor that starts
// meanwhile waits for it before it takes anything up).
func (u *Upgrader) drive(ctx context.Context, st *rollout.State) error {
	unlock, err := u.store.LockRollouts(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	if cur, err := (&rollout.FileStore{Path: u.statePath()}).Load(); err == nil && cur != nil && cur.ID == st.ID {
		st = cur // whoever held the lock may have moved it on
	}
	return u.runRollout(ctx, st)
}

func (u *Upgrader) statePath() string { return filepath.Join(u.Root, "rollout.json") }

// handOver asks the supervisor to roll st out (POST /v1/rollout) and
// follows it to its end. A supervisor busy with another roll-out is asked
// again until it takes this one. errNoSupervisor when nothing answers on
// the socket, or the supervisor there does not drive roll-outs.
func (u *Upgrader) handOver(ctx context.Context, st *rollout.State) error {
	c := supervisor.NewClient(u.StatusSocket)
	req := rollout.Request{Kind: st.Kind, SHA256: st.To, CanarySoak: rollout.Duration(u.CanarySoak),
		HealthTimeout: rollout.Duration(u.HealthTimeout)}
	var unavailable time.Time
	busy := false
	for {
		var got rollout.State
		asked := time.Now()
		err := c.Post(ctx, "/v1/rollout", req, &got)
		var ae *supervisor.APIError
		switch {
		case err == nil:
			u.Log.WithFields(logrus.Fields{"rollout": got.ID, "to": buildinfo.ShortSHA(st.To)}).Info("roll-out handed to the supervisor")
			return u.follow(ctx, got.ID)
		case errors.Is(err, supervisor.ErrUnreachable):
			return errNoSupervisor{err.Error()}
		case ctx.Err() != nil:
			return ctx.Err()
		case !errors.As(err, &ae):
			// The supervisor took the request and went away: it may have
			// accepted it (it persists a roll-out before answering).
			if p, _ := (&rollout.FileStore{Path: u.statePath()}).Load(); p != nil && p.To == st.To && !p.Started.Before(asked.Add(-time.Second)) {
				u.Log.WithError(err).WithField("rollout", p.ID).Warn("the supervisor accepted the roll-out and stopped answering: following it")
				return u.follow(ctx, p.ID)
			}
			return errNoSupervisor{err.Error()}
		case errors.As(err, &ae) && (ae.Status == http.StatusNotFound || ae.Status == http.StatusMethodNotAllowed):
			return errNoSupervisor{"the supervisor on " + u.StatusSocket + " does not drive roll-outs (an older release)"}
		case errors.As(err, &ae) && ae.Status == http.StatusConflict:
			if !busy {
				u.Log.WithField("supervisor", ae.Message).Info("the supervisor is busy with another roll-out: waiting for it")
				busy = true
			}
		case errors.As(err, &ae) && ae.Status == http.StatusServiceUnavailable:
			if unavailable.IsZero() {
				unavailable = time.Now()
				u.Log.WithField("supervisor", ae.Message).Warn("the supervisor cannot start the roll-out yet: asking again")
			}
			if time.Since(unavailable) > u.takeOverAfter() {
				return errNoSupervisor{"the supervisor could not start the roll-out for " + u.takeOverAfter().String() + ": " + ae.Message}
			}
		default:
			return fmt.Errorf("hand the roll-out to the supervisor: %w", err)
		}
		if err := sleep(ctx, time.Second); err != nil {
			return err
		}
	}
}

func (u *Upgrader) takeOverAfter() time.Duration {
	if u.TakeOverAfter > 0 {
		return u.TakeOverAfter
	}
	return 30 * time.Second
}

// follow polls the supervisor for roll-out id until it has ended, logging
// each of its steps, and returns its outcome: nil when done, a
// *rollout.RolledBackError when rolled back. While the supervisor restarts
// (it does so itself at the end of an upgrade) it is simply asked again; a
// supervisor gone for longer than TakeOverAfter, whose roll-out nobody
// drives any more, has its roll-out taken over here.
func (u *Upgrader) follow(ctx context.Context, id string) error {
	c := supervisor.NewClient(u.StatusSocket)
	seen := 0
	var gone time.Time
	for {
		var st *rollout.State
		err := c.Get(ctx, "/v1/rollout?id="+id, &st)
		var ae *supervisor.APIError
		answered := false
		switch {
		case err == nil && st != nil:
			answered = true
			seen = u.relay(st, seen)
			if st.Phase.Finished() {
				return outcome(st)
			}
		case errors.As(err, &ae) && ae.Status == http.StatusNotFound:
			// The supervisor does not know it: it may have ended in a
			// supervisor that has been replaced since.
			st, err := (&rollout.FileStore{Path: u.statePath()}).Load()
			if err != nil {
				return err
			}
			if st == nil || st.ID != id {
				return fmt.Errorf("the supervisor lost roll-out %s (see lodis releases)", id)
			}
			if st.Phase.Finished() {
				u.relay(st, seen)
				return outcome(st)
			}
		case ctx.Err() != nil:
			return ctx.Err()
		}
		if answered {
			gone = time.Time{}
		} else {
			// Not driven by the supervisor that answers here, if any.
			if gone.IsZero() {
				gone = time.Now()
				u.Log.WithError(err).Info("the supervisor does not answer for the roll-out (it restarts itself at the end of an upgrade): asking again")
			}
			if time.Since(gone) > u.takeOverAfter() {
				done, err := u.takeOver(ctx, id)
				if done {
					return err
				}
				gone = time.Now() // someone drives it: wait again
			}
		}
		if err := sleep(ctx, pollInterval); err != nil {
			return err
		}
	}
}

// takeOver drives roll-out id here when nobody else does (the roll-out lock
// is free). done is false when another process holds the lock.
func (u *Upgrader) takeOver(ctx context.Context, id string) (done bool, err error) {
	unlock, err := u.store.TryLockRollouts()
	if errors.Is(err, release.ErrLocked) {
		return false, nil
	}
	if err != nil {
		return true, err
	}
	defer unlock()
	st, err := (&rollout.FileStore{Path: u.statePath()}).Load()
	switch {
	case err != nil:
		return true, err
	case st == nil || st.ID != id:
		return true, fmt.Errorf("the supervisor lost roll-out %s (see lodis releases)", id)
	case st.Phase.Finished():
		return true, outcome(st)
	}
	u.Log.WithFields(logrus.Fields{"rollout": id, "phase": st.Phase}).Warn("the supervisor has not answered for " +
		u.takeOverAfter().String() + " and nobody drives its roll-out: taking it over")
	return true, u.runRollout(ctx, st)
}

// relay logs the events of st from index seen on, as the driver would have,
// and returns the new count.
func (u *Upgrader) relay(st *rollout.State, seen int) int {
	if seen > len(st.Events) {
		seen = 0 // the list was trimmed; rare, and repeating is harmless
	}
	for _, e := range st.Events[seen:] {
		f := logrus.Fields{"rollout": e.Rollout, "event": e.Kind, "by": "supervisor"}
		if e.Unit != "" {
			f["unit"] = e.Unit
		}
		u.Log.WithFields(f).Info(e.Message)
	}
	return len(st.Events)
}

// outcome is the error Runner.Run would have returned for a finished st.
func outcome(st *rollout.State) error {
	if st.Phase == rollout.PhaseDone {
		return nil
	}
	return &rollout.RolledBackError{Reason: st.Reason, Failed: st.Phase == rollout.PhaseFailed}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
