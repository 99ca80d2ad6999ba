package supervisor

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/lodis/lodis/internal/events"
	"github.com/lodis/lodis/internal/systemd"
)

// HoldWorkers stops the supervisor from mending workers — resetting a
// failed one, restarting a hung one — until resume is called, because who
// (a roll-out) is restarting them on purpose and a remedy would be a second
// restart. Failed sockets are still recovered, and every state change and
// probe verdict is still tracked and reported; a remedy that would have run
// is reported once per instance with Result "held". On resume, probe
// failures are counted afresh and a worker still failed is reset. One hold
// at a time: a second hold replaces who. It returns a no-op when ctx ends
// before the supervisor answers.
func (s *Supervisor) HoldWorkers(ctx context.Context, who string) (resume func()) {
	if who == "" {
		who = "another lodis component"
	}
	if s.send(ctx, holdReq{who: who}) != nil {
		return func() {}
	}
	var once sync.Once
	return func() { once.Do(func() { s.send(context.Background(), holdReq{}) }) }
}

// HoldWorkersFor is HoldWorkers as a lease: the hold ends by itself after
// ttl unless renewed (called again by the same who); ttl 0 ends it now. It
// is how root's roll-out, in another process that may die, holds the
// remedies (POST /v1/hold).
func (s *Supervisor) HoldWorkersFor(ctx context.Context, who string, ttl time.Duration) error {
	if ttl <= 0 {
		who = ""
	}
	return s.send(ctx, holdReq{who: who, until: time.Now().Add(ttl), lease: ttl > 0})
}

// holdReq asks the Run goroutine to set the hold.
type holdReq struct {
	who   string // "" releases it
	until time.Time
	lease bool
}

func (s *Supervisor) send(ctx context.Context, r holdReq) error {
	select {
	case s.holds <- r:
		return nil
	case <-ctx.Done():
		return errors.New("the supervisor is busy or stopping")
	case <-s.stopped:
		return errors.New("the supervisor is stopping")
	}
}

// onHold applies a hold request; leases are timed by holdTimer.
func (s *Supervisor) onHold(r holdReq) {
	if r.lease {
		s.holdUntil = r.until
		if s.holdTimer == nil {
			s.holdTimer = time.NewTimer(time.Until(r.until))
		} else {
			s.holdTimer.Reset(time.Until(r.until))
		}
	} else {
		s.holdUntil = time.Time{}
		if s.holdTimer != nil {
			s.holdTimer.Stop()
		}
	}
	s.setHold(r.who)
}

// holdExpired ends a lease that was not renewed in time.
func (s *Supervisor) holdExpired() {
	if !s.holdUntil.IsZero() && !time.Now().Before(s.holdUntil) {
		s.holdUntil = time.Time{}
		s.setHold("")
	}
}

// holdC is the lease timer's channel, nil when there is none.
func (s *Supervisor) holdC() <-chan time.Time {
	if s.holdTimer == nil || s.holdUntil.IsZero() {
		return nil
	}
	return s.holdTimer.C
}

// setHold records who holds the worker remedies ("" releases them).
func (s *Supervisor) setHold(who string) {
	if who == s.hold {
		return
	}
	was := s.hold
	s.hold = who
	if who != "" {
		s.o.Events.Emit(events.Event{Kind: events.KindSupervisor, Action: "hold", Result: "done",
			Message: "worker remedies held: " + who + " is restarting workers"})
		return
	}
	s.o.Events.Emit(events.Event{Kind: events.KindSupervisor, Action: "resume", Result: "done",
		Message: "worker remedies resumed after " + was})
	for _, in := range s.instances {
		in.probe.failures = 0
		held := in.held
		in.held = [nRemedies]bool{}
		if held[remedyResetService] && in.service.ActiveState == "failed" {
			s.schedule(in, remedyResetService)
		}
		if held[remedyResetAlt] && in.alt.ActiveState == "failed" {
			s.schedule(in, remedyResetAlt)
		}
	}
}

// holding reports whether remedy r of in must wait for the hold to end, and
// reports the first such remedy of each kind and instance.
func (s *Supervisor) holding(in *instance, r remedy) bool {
	if s.hold == "" || (r != remedyResetService && r != remedyRestart && r != remedyIdleStop && r != remedyResetAlt) {
		return false
	}
	if !in.held[r] {
		in.held[r] = true
		s.o.Events.Emit(events.Event{Kind: events.KindRemedy, Instance: in.port, Unit: systemd.ServiceUnit(in.port), Action: r.String(),
			Result: "held", Message: "not applied while " + s.hold + " is restarting workers"})
	}
	return true
}
