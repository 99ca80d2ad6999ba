package supervisor

import (
	"context"
	"sync"

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
// at a time: a second HoldWorkers replaces who. It returns a no-op when ctx
// ends before the supervisor answers.
func (s *Supervisor) HoldWorkers(ctx context.Context, who string) (resume func()) {
	if who == "" {
		who = "another lodis component"
	}
	select {
	case s.holds <- who:
	case <-ctx.Done():
		return func() {}
	case <-s.stopped:
		return func() {}
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			select {
			case s.holds <- "":
			case <-s.stopped:
			}
		})
	}
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
	}
}

// holding reports whether remedy r of in must wait for the hold to end, and
// reports the first such remedy of each kind and instance.
func (s *Supervisor) holding(in *instance, r remedy) bool {
	if s.hold == "" || (r != remedyResetService && r != remedyRestart) {
		return false
	}
	if !in.held[r] {
		in.held[r] = true
		s.o.Events.Emit(events.Event{Kind: events.KindRemedy, Instance: in.port, Unit: systemd.ServiceUnit(in.port), Action: r.String(),
			Result: "held", Message: "not applied while " + s.hold + " is restarting workers"})
	}
	return true
}
