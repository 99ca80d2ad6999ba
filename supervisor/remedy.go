package supervisor

import (
	"context"
	"errors"
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
		_, w := in.worker()
		need = w.ActiveState == "active" && in.probe.failures >= s.o.ProbeFailures
	case remedyIdleStop:
		idle := in.app().IdleTimeout
		need = len(in.running()) > 0 && idle > 0 && in.conns.Active == 0 &&
			!in.idleSince.IsZero() && time.Since(in.idleSince) >= idle
	case remedyResetAlt:
		need = in.alt.ActiveState == "failed"
	}
	if !need || s.bus == nil || s.holding(in, k.kind) {
		in.pending[k.kind] = false
		return
	}
	bus := s.bus
	serving, _ := in.worker()
	running := in.running()
	// A socket failed by a limit (its trigger limit, its service's start
	// limit) would fail again at the next connection: systemd resets the
	// trigger limit's window for nobody. Its worker is started directly —
	// a running worker needs no trigger — so that the port serves at once.
	startWorker := k.kind == remedyRecoverSocket &&
		(in.socket.Result == "trigger-limit-hit" || in.socket.Result == "service-start-limit-hit")
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
			if err == nil && startWorker {
				err = bus.StartUnit(rctx, systemd.ServiceUnit(k.port))
			}
		case remedyResetService:
			err = bus.ResetFailedUnit(rctx, systemd.ServiceUnit(k.port))
		case remedyRestart:
			err = bus.RestartUnit(rctx, serving)
		case remedyIdleStop:
			for _, u := range running {
				err = errors.Join(err, bus.StopUnit(rctx, u))
			}
		case remedyResetAlt:
			err = bus.ResetFailedUnit(rctx, systemd.AltUnit(k.port))
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
		if in != nil && (in.socket.Result == "trigger-limit-hit" || in.socket.Result == "service-start-limit-hit") {
			e.Message += ", its worker started directly (the socket's limit would fail it again at the next connection)"
		}
	case remedyResetService:
		e.Unit, e.Message = systemd.ServiceUnit(r.port), "failed worker reset; the socket starts a fresh one on the next connection"
	case remedyRestart:
		e.Unit, e.Message = systemd.ServiceUnit(r.port), fmt.Sprintf("hung worker restarted after %d failed health probes", s.o.ProbeFailures)
		if in != nil {
			e.Unit, _ = in.worker()
		}
	case remedyResetAlt:
		e.Unit, e.Message = systemd.AltUnit(r.port), "failed alternate worker reset; the socket starts the port's own worker on the next connection"
	case remedyIdleStop:
		if in != nil {
			e = idleStopEvent(in)
		}
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
		if in.alt.Name != "" && e.Unit == in.alt.Name {
			e.To = in.alt.State()
		} else if in.service.Name != "" && e.Unit == in.service.Name {
			e.To = in.service.State()
		} else if e.Unit == in.socket.Name {
			e.To = in.socket.State()
		}
	}
	s.o.Events.Emit(e)
	if s.o.Metrics != nil {
		s.o.Metrics.CountRemedy(r.port, r.kind.String(), e.Result)
	}
	// A recovery that failed leaves the socket failed with no new signal to
	// come: try again, after the backoff.
	if r.err != nil && in != nil && r.kind == remedyRecoverSocket && in.socket.ActiveState == "failed" {
		s.schedule(in, r.kind)
	}
}
