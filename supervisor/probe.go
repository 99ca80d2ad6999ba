package supervisor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/lodis/lodis/internal/events"
	"github.com/lodis/lodis/internal/health"
	"github.com/lodis/lodis/internal/systemd"
)

// probeRunning probes the running workers that need it: a process not probed
// yet, one that failed its last probe, or one that served other traffic since
// the last probe. A quiet worker is left alone so that it can exit when idle.
func (s *Supervisor) probeRunning(ctx context.Context) {
	for _, in := range s.instances {
		_, sv := in.worker()
		p := &in.probe
		if sv.ActiveState != "active" || sv.SubState != "running" || sv.MainPID == 0 || p.running {
			continue
		}
		if p.pid == sv.MainPID && p.failures == 0 && !p.busy && in.conns.Established == 0 {
			continue
		}
		p.running = true
		s.startProbe(ctx, in, sv.MainPID, false)
	}
}

// probeNew probes, at once, the running workers whose process has not been
// probed yet, so that a new worker's version and health show without waiting
// for the next probe round.
func (s *Supervisor) probeNew(ctx context.Context) {
	for _, in := range s.instances {
		_, sv := in.worker()
		p := &in.probe
		if sv.ActiveState != "active" || sv.SubState != "running" || sv.MainPID == 0 || p.running || p.tried == sv.MainPID {
			continue
		}
		p.running = true
		s.startProbe(ctx, in, sv.MainPID, false)
	}
}

// wakeProbe sends one request to each idle, listening port: socket
// activation must start a worker that answers.
func (s *Supervisor) wakeProbe(ctx context.Context) {
	for _, in := range s.instances {
		if in.socket.ActiveState == "active" && len(in.running()) == 0 && !in.wakeProbeRunning {
			in.wakeProbeRunning = true
			s.startProbe(ctx, in, 0, true)
		}
	}
}

func (s *Supervisor) startProbe(ctx context.Context, in *instance, pid uint32, wake bool) {
	if !wake {
		in.probe.tried = pid
	}
	listen, port, app := in.listen, in.port, in.app()
	timeout := s.o.ProbeTimeout
	if t, ok := app.declaredHealthTimeout(); ok {
		timeout = t
	}
	go func() {
		pctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		r := probeResult{port: port, pid: pid, wake: wake}
		r.health, r.latency, r.err = s.probe(pctx, listen, port, app.HealthPath)
		select {
		case s.probed <- r:
		case <-ctx.Done():
		}
	}()
}

func (s *Supervisor) onProbe(r probeResult) {
	in := s.instances[r.port]
	if in == nil {
		return
	}
	// Wake probes start a worker: their latency is a cold start's, which
	// lodis_activation_ready_seconds records.
	if s.o.Metrics != nil && !r.wake {
		res := "ok"
		if r.err != nil {
			res = "failed"
		}
		s.o.Metrics.ObserveProbe(r.port, res, r.latency.Seconds())
	}
	if r.wake {
		in.wakeProbeRunning = false
		e := events.Event{Kind: events.KindWakeProbe, Instance: r.port, Unit: systemd.SocketUnit(r.port), Action: "wake-probe", Result: "done",
			Message: fmt.Sprintf("idle port woke a worker (pid %d) that answered in %s", r.health.PID, r.latency.Round(time.Millisecond))}
		if r.err != nil {
			e.Result, e.Message = "failed", "idle port did not answer through socket activation: "+r.err.Error()
		}
		s.o.Events.Emit(e)
		return
	}
	p := &in.probe
	p.running = false
	p.lastAt, p.latency = time.Now(), r.latency
	if r.err != nil {
		p.lastErr = r.err.Error()
		p.failures++
		if p.failures == 1 || p.failures == s.o.ProbeFailures {
			s.o.Events.Emit(events.Event{Kind: events.KindProbe, Instance: r.port, Unit: systemd.ServiceUnit(r.port), To: "unhealthy",
				Result: "failed", Message: fmt.Sprintf("health probe %d of %d failed: %s", p.failures, s.o.ProbeFailures, r.err)})
		}
		if _, w := in.worker(); p.failures >= s.o.ProbeFailures && w.ActiveState == "active" && w.MainPID == r.pid {
			s.schedule(in, remedyRestart)
		}
		return
	}
	if p.failures > 0 {
		s.o.Events.Emit(events.Event{Kind: events.KindProbe, Instance: r.port, Unit: systemd.ServiceUnit(r.port), From: "unhealthy", To: "healthy",
			Result: "done", Message: fmt.Sprintf("health probe answered again after %d failures", p.failures)})
	}
	h := r.health
	// A lodis health report counts requests: traffic beside the probes
	// makes the worker busy. Of other apps the kernel's connection counts
	// tell (countConns).
	if h.PID != 0 {
		if p.pid == r.pid {
			p.busy = h.Requests > p.requests+1 || h.OpenConns > 1
		} else {
			p.busy = h.Requests > 1 || h.OpenConns > 1
		}
	} else {
		p.busy = false
	}
	s.countRequests(in, r.pid, h)
	p.pid, p.requests, p.failures, p.lastErr, p.last = r.pid, h.Requests, 0, "", &h
	if in.service.MainPID == r.pid {
		s.noteActivation(in, true, time.Now())
	}
	s.gaugeInstance(in)
}

// maxProbeTimeout bounds a probe whatever the app declares; each probe's
// own timeout is its context's.
const maxProbeTimeout = 5 * time.Minute

// probe asks the worker behind a socket listening on listen for its health
// on path. Any answer other than 2xx is an error; a 2xx body that is not a
// health report is healthy (the app contract asks for nothing more).
func (s *Supervisor) probe(ctx context.Context, listen, port, path string) (health.Report, time.Duration, error) {
	h, took, err := s.prober.Get(ctx, listen, port, path)
	var syn *health.SyntaxError
	switch {
	case errors.As(err, &syn):
		return health.Report{}, took, nil
	case err != nil:
		return h, took, fmt.Errorf("health probe: %w", err)
	}
	return h, took, nil
}
