package supervisor

import (
	"time"

	"github.com/lodis/lodis/internal/appconf"
	"github.com/lodis/lodis/internal/health"
)

// What the state machine tells the metrics (package metrics), per port.
// Every method runs on the Run goroutine and does nothing without Metrics.

// gaugeInstance sets the gauges of one instance: the ActiveStates of its
// socket and worker, and the release its running worker runs.
func (s *Supervisor) gaugeInstance(in *instance) {
	m := s.o.Metrics
	if m == nil {
		return
	}
	_, w := in.worker()
	sock, work := in.socket.ActiveState, w.ActiveState
	if sock == "" || !in.socketSeen {
		sock = "inactive"
	}
	if work == "" || (!in.serviceSeen && !in.altSeen) {
		work = "inactive"
	}
	m.SetUnitStates(in.port, sock, work)
	sha, version, running := in.runningRelease()
	m.SetWorkerRelease(in.port, running, sha, version)
}

// runningRelease is the release the port's worker (either unit) runs — its sha256
// (from the store, else from the worker's own health answer) and version
// (from its health answer) — and whether a worker runs at all.
func (in *instance) runningRelease() (sha, version string, running bool) {
	_, w := in.worker()
	if w.ActiveState != "active" || w.MainPID == 0 {
		return "", "", false
	}
	sha = in.release
	if h := in.probe.last; h != nil && in.probe.pid == w.MainPID {
		version = h.Version
		if sha == "" {
			sha = h.SHA256 // a lodis health report says it (a release not in the store)
		}
	}
	return sha, version, true
}

// noteActivation records, once per worker start, the time from the start
// (the unit leaving inactive: InactiveExitTimestamp) to ready. A READY=notify
// app is ready when its unit is active (ActiveEnterTimestamp: systemd got
// READY=1); a READY=health app, whose unit is active once exec'd, when its
// first health probe answers (healthy, at now). Starts from before the
// supervisor ran are not recorded: a supervisor restarted would count them
// twice.
func (s *Supervisor) noteActivation(in *instance, healthy bool, now time.Time) {
	sv := in.service
	start := sv.InactiveExit
	if s.o.Metrics == nil || sv.ActiveState != "active" || start.IsZero() || !start.After(s.started) || start.Equal(in.activationSeen) {
		return
	}
	ready := sv.ActiveEnter
	if in.app().Ready == appconf.ReadyHealth {
		if !healthy {
			return
		}
		ready = now
	}
	if ready.Before(start) {
		return // the signal with the new ActiveEnterTimestamp is still to come
	}
	in.activationSeen = start
	s.o.Metrics.ObserveActivation(in.port, ready.Sub(start).Seconds())
}

// countRequests adds the requests a worker served since its last health
// answer: h is the answer of process pid; the previous answer, if of the
// same process, counted prev. An app that reports no requests adds nothing.
func (s *Supervisor) countRequests(in *instance, pid uint32, h health.Report) {
	if s.o.Metrics == nil || h.PID == 0 || h.Requests == 0 {
		return
	}
	var prev uint64
	if in.probe.pid == pid {
		prev = in.probe.requests
	}
	if h.Requests > prev {
		s.o.Metrics.AddAppRequests(in.port, h.Requests-prev)
	}
}
