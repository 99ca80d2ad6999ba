package supervisor

import (
	"context"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/lodis/lodis/internal/events"
	"github.com/lodis/lodis/internal/systemd"
)

// schedule arranges remedy r for in after its backoff, unless one is
// already scheduled or under way.
func (s *Supervisor) schedule(in *instance, r remedy) {
	if in.pending[r] || s.holding(in, r) {
		return
	}
	in.pending[r] = true
	d := in.backoff[r].next(time.Now(), s.o.BackoffReset, s.o.BackoffMax)
	k := remedyKey{in.port, r}
	if d == 0 {
		select {
		case s.due <- k:
			return
		default:
		}
	}
	if d > 0 {
		s.o.Log.WithFields(logrus.Fields{"instance": in.port, "remedy": r.String(), "delay": d}).Info("remedy delayed by backoff")
	}
	done := s.done
	time.AfterFunc(d, func() {
		select {
		case s.due <- k:
		case <-done:
		}
	})
}

// runRemedy starts remedy k if it is still called for.
func (s *Supervisor) runRemedy(ctx context.Context, k remedyKey) {
	in := s.instances[k.port]
	if in == nil {
		return
	}
	need := false
	switch k.kind {
	case remedyRecoverSocket:
		need = in.socket.ActiveState == "failed"
	case remedyResetService:
		need = in.service.ActiveState == "failed" && in.socket.ActiveState != "failed"
	case remedyRestart:
		need = in.service.ActiveState == "active" && in.probe.failures >= s.o.ProbeFailures
	}
	if !need || s.bus == nil || s.holding(in, k.kind) {
		in.pending[k.kind] = false
		return
	}
	bus := s.bus
	go func() {
		rctx, cancel := context.WithTimeout(ctx, s.o.RemedyTimeout)
		defer cancel()
		var err error
		switch k.kind {
		case remedyRecoverSocket:
			bus.ResetFailedUnit(rctx, systemd.ServiceUnit(k.port)) // may not be loaded or failed: fine
			if err = bus.ResetFailedUnit(rctx, systemd.SocketUnit(k.port)); err == nil {
				err = bus.StartUnit(rctx, systemd.SocketUnit(k.port))
			}
		case remedyResetService:
			err = bus.ResetFailedUnit(rctx, systemd.ServiceUnit(k.port))
		case remedyRestart:
			err = bus.RestartUnit(rctx, systemd.ServiceUnit(k.port))
		}
		select {
		case s.remedied <- remedyResult{k, err}:
		case <-ctx.Done():
		}
	}()
}

func (s *Supervisor) onRemedied(r remedyResult) {
	in := s.instances[r.port]
	e := events.Event{Kind: events.KindRemedy, Instance: r.port, Action: r.kind.String(), Result: "done"}
	switch r.kind {
	case remedyRecoverSocket:
		e.Unit, e.Message = systemd.SocketUnit(r.port), "socket reset and started again"
	case remedyResetService:
		e.Unit, e.Message = systemd.ServiceUnit(r.port), "failed worker reset; the socket starts a fresh one on the next connection"
	case remedyRestart:
		e.Unit, e.Message = systemd.ServiceUnit(r.port), fmt.Sprintf("hung worker restarted after %d failed health probes", s.o.ProbeFailures)
	}
	if r.err != nil {
		e.Result, e.Message = "failed", r.err.Error()
	}
	if in != nil {
		in.pending[r.kind] = false
		if r.kind == remedyRestart {
			in.probe.failures = 0
			in.restarts++
		}
		if in.service.Name != "" && e.Unit == in.service.Name {
			e.To = in.service.State()
		} else if e.Unit == in.socket.Name {
			e.To = in.socket.State()
		}
	}
	s.o.Events.Emit(e)
	if s.o.Metrics != nil {
		s.o.Metrics.CountRemedy(r.kind.String(), e.Result)
	}
	// A recovery that failed leaves the socket failed with no new signal to
	// come: try again, after the backoff.
	if r.err != nil && in != nil && r.kind == remedyRecoverSocket && in.socket.ActiveState == "failed" {
		s.schedule(in, r.kind)
	}
}
