package rollout

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/lodis/lodis/internal/buildinfo"
	"github.com/lodis/lodis/internal/release"
	"github.com/lodis/lodis/internal/statusapi"
)

// DefaultTakeOverAfter is how long a Client waits for a supervisor that
// stopped answering before it takes its roll-out over.
const DefaultTakeOverAfter = 30 * time.Second

// pollInterval is how often the outcome of a handed-over roll-out is asked.
const pollInterval = 250 * time.Millisecond

// Client hands roll-outs to the supervisor's Service over the status socket
// and follows them to their end, for the commands that start roll-outs
// (`lodis upgrade`, `lodis rollback`).
type Client struct {
	// Socket is the supervisor's status socket.
	Socket string
	// Store is the roll-out store the supervisor persists to.
	Store *Store
	// Log receives the roll-out's steps as the supervisor reports them.
	Log logrus.FieldLogger
	// TakeOverAfter is how long the supervisor may stay unreachable, or
	// unable to start a roll-out, before the Client gives up on it; default
	// DefaultTakeOverAfter.
	TakeOverAfter time.Duration
	// Drive runs a roll-out in the calling process, under the roll-out
	// lock the Client holds: what Follow does with a roll-out nobody drives
	// any more.
	Drive func(ctx context.Context, st *State) error
}

// NoSupervisorError says no supervisor takes roll-outs on the socket: the
// caller drives the roll-out itself.
type NoSupervisorError struct{ Why string }

func (e *NoSupervisorError) Error() string { return e.Why }

// HandOver asks the supervisor to roll st out (POST /v1/rollout with req)
// and follows it to its end. A supervisor busy with another roll-out is
// asked again until it takes this one. The error is a *NoSupervisorError
// when nothing answers on the socket, or the supervisor there does not drive
// roll-outs; a *RolledBackError when the roll-out was rolled back.
func (c *Client) HandOver(ctx context.Context, st *State, req Request) error {
	api := statusapi.NewClient(c.Socket)
	var unavailable time.Time
	busy := false
	for {
		var got State
		asked := time.Now()
		err := api.Post(ctx, "/v1/rollout", req, &got)
		var ae *statusapi.APIError
		switch {
		case err == nil:
			c.Log.WithFields(logrus.Fields{"rollout": got.ID, "to": buildinfo.ShortSHA(st.To)}).Info("roll-out handed to the supervisor")
			return c.Follow(ctx, got.ID)
		case errors.Is(err, statusapi.ErrUnreachable):
			return &NoSupervisorError{err.Error()}
		case ctx.Err() != nil:
			return ctx.Err()
		case !errors.As(err, &ae):
			// The supervisor took the request and went away: it may have
			// accepted it (it persists a roll-out before answering).
			if p, _ := c.Store.Load(); p != nil && p.To == st.To && !p.Started.Before(asked.Add(-time.Second)) {
				c.Log.WithError(err).WithField("rollout", p.ID).Warn("the supervisor accepted the roll-out and stopped answering: following it")
				return c.Follow(ctx, p.ID)
			}
			return &NoSupervisorError{err.Error()}
		case ae.Status == http.StatusNotFound || ae.Status == http.StatusMethodNotAllowed:
			return &NoSupervisorError{"the supervisor on " + c.Socket + " does not drive roll-outs (an older release)"}
		case ae.Status == http.StatusConflict:
			if !busy {
				c.Log.WithField("supervisor", ae.Message).Info("the supervisor is busy with another roll-out: waiting for it")
				busy = true
			}
		case ae.Status == http.StatusServiceUnavailable:
			if unavailable.IsZero() {
				unavailable = time.Now()
				c.Log.WithField("supervisor", ae.Message).Warn("the supervisor cannot start the roll-out yet: asking again")
			}
			if time.Since(unavailable) > c.takeOverAfter() {
				return &NoSupervisorError{"the supervisor could not start the roll-out for " + c.takeOverAfter().String() + ": " + ae.Message}
			}
		default:
			return fmt.Errorf("hand the roll-out to the supervisor: %w", err)
		}
		if err := sleep(ctx, time.Second); err != nil {
			return err
		}
	}
}

func (c *Client) takeOverAfter() time.Duration {
	if c.TakeOverAfter > 0 {
		return c.TakeOverAfter
	}
	return DefaultTakeOverAfter
}

// Follow polls the supervisor for roll-out id until it has ended, logging
// each of its steps, and returns its outcome (State.Err). While the
// supervisor restarts (it does so itself at the end of an upgrade) it is
// simply asked again; a supervisor gone for longer than TakeOverAfter, whose
// roll-out nobody drives any more, has its roll-out taken over with Drive.
func (c *Client) Follow(ctx context.Context, id string) error {
	api := statusapi.NewClient(c.Socket)
	seen := 0
	var gone time.Time
	for {
		var st *State
		err := api.Get(ctx, "/v1/rollout?id="+id, &st)
		var ae *statusapi.APIError
		answered := false
		switch {
		case err == nil && st != nil:
			answered = true
			seen = c.relay(st, seen)
			if st.Phase.Finished() {
				return st.Err()
			}
		case errors.As(err, &ae) && ae.Status == http.StatusNotFound:
			// The supervisor does not know it: it may have ended in a
			// supervisor that has been replaced since.
			st, err := c.Store.Load()
			if err != nil {
				return err
			}
			if st == nil || st.ID != id {
				return fmt.Errorf("the supervisor lost roll-out %s (see lodis releases)", id)
			}
			if st.Phase.Finished() {
				c.relay(st, seen)
				return st.Err()
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
				c.Log.WithError(err).Info("the supervisor does not answer for the roll-out (it restarts itself at the end of an upgrade): asking again")
			}
			if time.Since(gone) > c.takeOverAfter() {
				done, err := c.takeOver(ctx, id)
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
func (c *Client) takeOver(ctx context.Context, id string) (done bool, err error) {
	unlock, err := c.Store.TryLock()
	if errors.Is(err, release.ErrLocked) {
		return false, nil
	}
	if err != nil {
		return true, err
	}
	defer unlock()
	st, err := c.Store.Load()
	switch {
	case err != nil:
		return true, err
	case st == nil || st.ID != id:
		return true, fmt.Errorf("the supervisor lost roll-out %s (see lodis releases)", id)
	case st.Phase.Finished():
		return true, st.Err()
	}
	c.Log.WithFields(logrus.Fields{"rollout": id, "phase": st.Phase}).Warn("the supervisor has not answered for " +
		c.takeOverAfter().String() + " and nobody drives its roll-out: taking it over")
	return true, c.Drive(ctx, st)
}

// relay logs the events of st from index seen on, as the driver would have,
// and returns the new count.
func (c *Client) relay(st *State, seen int) int {
	if seen > len(st.Events) {
		seen = 0 // the list was trimmed; rare, and repeating is harmless
	}
	for _, e := range st.Events[seen:] {
		f := logrus.Fields{"rollout": e.Rollout, "event": e.Kind, "by": "supervisor"}
		if e.Unit != "" {
			f["unit"] = e.Unit
		}
		c.Log.WithFields(f).Info(e.Message)
	}
	return len(st.Events)
}

// Err is the error Runner.Run returns for a finished st: nil when done, a
// *RolledBackError when rolled back or failed; nil for a State not finished.
func (st *State) Err() error {
	if st.Phase == PhaseDone || !st.Phase.Finished() {
		return nil
	}
	return &RolledBackError{Reason: st.Reason, Failed: st.Phase == PhaseFailed}
}
