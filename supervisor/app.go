package supervisor

import (
	"strings"
	"time"

	"github.com/lodis/lodis/internal/appconf"
	"github.com/lodis/lodis/internal/events"
	"github.com/lodis/lodis/internal/metrics"
	"github.com/lodis/lodis/internal/systemd"
)

// appOf is an app's settings as the supervisor needs them, read from its
// worker unit's Environment= (set there by lodis-generator from
// /etc/lodis/app.conf).
type appOf struct {
	appconf.Config
	env []string
}

// app is the settings of in's app; the defaults until its worker unit has
// been read.
func (in *instance) app() appOf {
	_, w := in.worker()
	env := w.Environment
	if env == nil {
		env = in.service.Environment
	}
	return appOf{Config: appconf.FromEnvironment(env), env: env}
}

// declaredHealthTimeout is the app's HEALTH_TIMEOUT when app.conf sets one.
func (a appOf) declaredHealthTimeout() (time.Duration, bool) {
	for _, kv := range a.env {
		if strings.HasPrefix(kv, "LODIS_HEALTH_TIMEOUT=") {
			return a.HealthTimeout, true
		}
	}
	return 0, false
}

// noteWorker reads which release a new main process runs, and starts its
// idle clock.
func (s *Supervisor) noteWorker(in *instance) {
	unit, w := in.worker()
	pid := w.MainPID
	if w.ActiveState != "active" || pid == 0 || pid == in.releasePID {
		return
	}
	in.releasePID, in.release = pid, ""
	if s.o.Releases != nil {
		in.release = s.o.Releases.ReleaseOf(int(pid))
	}
	in.idleSince = time.Now()
	// A new worker runs with the unit's settings as they are now (a
	// daemon-reload may have changed its Environment=): read them again.
	_, typ, _ := systemd.ParseUnit(unit)
	if s.runCtx != nil && s.bus != nil && !in.fetching[typIndex(typ)] {
		s.fetch(s.runCtx, unit, in, true)
	}
}

// countConns reads the kernel's connection counts of every port (every
// countInterval) and stops the workers whose app asks for it (IDLE_TIMEOUT)
// once their port has had no connection at any count for that long. A
// connection opened and closed between two counts is not seen: the idle
// clock counts from the kernel's view at those instants, and from each
// worker's start.
func (s *Supervisor) countConns() {
	ports := map[string]bool{}
	for p := range s.instances {
		ports[p] = true
	}
	if len(ports) == 0 {
		return
	}
	counts, err := s.o.Sockets(ports)
	if err != nil {
		if !s.connsFailed {
			s.connsFailed = true
			s.o.Log.WithError(err).Warn("cannot read the kernel's socket table: no idle stops, busy workers told by their health reports only (logged once)")
		}
		return
	}
	s.connsFailed = false
	now := time.Now()
	for p, in := range s.instances {
		in.conns = counts[p]
		running := len(in.running()) > 0
		switch {
		case !running || in.conns.Active > 0:
			in.idleSince = time.Time{}
		case in.idleSince.IsZero():
			in.idleSince = now
		}
		if idle := in.app().IdleTimeout; running && idle > 0 && !in.idleSince.IsZero() && now.Sub(in.idleSince) >= idle {
			s.schedule(in, remedyIdleStop)
		}
		if s.o.Metrics != nil {
			ls := make([]metrics.Listener, len(in.conns.Listeners))
			for i, l := range in.conns.Listeners {
				ls[i] = metrics.Listener(l)
			}
			s.o.Metrics.SetConns(p, in.conns.Established, ls)
		}
	}
}

// idleStopEvent is the event of an idle stop.
func idleStopEvent(in *instance) events.Event {
	return events.Event{Kind: events.KindRemedy, Instance: in.port, Unit: systemd.ServiceUnit(in.port), Action: remedyIdleStop.String(),
		Result: "done", Message: "no connection for " + in.app().IdleTimeout.String() + " (IDLE_TIMEOUT): worker stopped; the socket starts one on the next connection"}
}
