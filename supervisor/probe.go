package supervisor

import (
	"context"
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
		sv := in.service
		p := &in.probe
		if sv.ActiveState != "active" || sv.SubState != "running" || sv.MainPID == 0 || p.running {
			continue
		}
		if p.pid == sv.MainPID && p.failures == 0 && !p.busy {
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
		sv := in.service
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
		if in.socket.ActiveState == "active" && in.service.ActiveState != "active" && !in.wakeProbeRunning {
			in.wakeProbeRunning = true
			s.startProbe(ctx, in, 0, true)
		}
	}
}

func (s *Supervisor) startProbe(ctx context.Context, in *instance, pid uint32, wake bool) {
	if !wake {
		in.probe.tried = pid
	}
	listen, port := in.listen, in.port
	go func() {
		pctx, cancel := context.WithTimeout(ctx, s.o.ProbeTimeout)
		defer cancel()
		r := probeResult{port: port, pid: pid, wake: wake}
		r.health, r.latency, r.err = s.probe(pctx, listen, port)
		select {
		case s.probed <- r:
		case <-ctx.Done():
		}
	}()
}

func (s *Supervisor) onProbe(r probeResult) {
	if s.o.Metrics != nil {
		res := "ok"
		if r.err != nil {
			res = "failed"
		}
		kind := "running"
		if r.wake {
			kind = "wake"
		}
		s.o.Metrics.ObserveProbe(kind, res, r.latency.Seconds())
	}
	in := s.instances[r.port]
	if in == nil {
		return
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
		if p.failures >= s.o.ProbeFailures && in.service.ActiveState == "active" && in.service.MainPID == r.pid {
			s.schedule(in, remedyRestart)
		}
		return
	}
	if p.failures > 0 {
		s.o.Events.Emit(events.Event{Kind: events.KindProbe, Instance: r.port, Unit: systemd.ServiceUnit(r.port), From: "unhealthy", To: "healthy",
			Result: "done", Message: fmt.Sprintf("health probe answered again after %d failures", p.failures)})
	}
	h := r.health
	if p.pid == uint32(h.PID) {
		p.busy = h.Requests > p.requests+1 || h.OpenConns > 1
	} else {
		p.busy = h.Requests > 1 || h.OpenConns > 1
	}
	p.pid, p.requests, p.failures, p.lastErr, p.last = uint32(h.PID), h.Requests, 0, "", &h
}

// probe asks the worker behind a socket listening on listen for its health.
// Any answer other than 200 with a JSON body naming a pid is an error.
func (s *Supervisor) probe(ctx context.Context, listen, port string) (health.Report, time.Duration, error) {
	h, took, err := s.prober.Get(ctx, listen, port)
	switch {
	case err != nil:
		return h, took, fmt.Errorf("health probe: %w", err)
	case h.PID == 0:
		return h, took, fmt.Errorf("health probe: the answer names no pid: not lodis health JSON")
	}
	return h, took, nil
}
