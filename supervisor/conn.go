package supervisor

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/lodis/lodis/internal/events"
	"github.com/lodis/lodis/internal/systemd"
)

// dial connects and reads the initial state off the Run goroutine.
func (s *Supervisor) dial(ctx context.Context) {
	if s.dialing {
		return
	}
	s.dialing = true
	go func() {
		r := dialResult{}
		r.bus, r.err = s.o.dial()
		if r.err == nil {
			lctx, cancel := context.WithTimeout(ctx, s.o.RemedyTimeout)
			r.units, r.err = r.bus.ListUnits(lctx, systemd.SocketPattern, systemd.WorkerPattern, systemd.AltPattern)
			if r.err == nil {
				r.listen = map[string]string{}
				for _, u := range r.units {
					if port, typ, _ := systemd.ParseUnit(u.Name); typ == "socket" {
						r.listen[port], _ = r.bus.ListenAddress(lctx, u.Name)
					}
				}
			}
			cancel()
			if r.err != nil {
				r.bus.Close()
				r.bus = nil
			}
		}
		select {
		case s.dialed <- r:
		case <-ctx.Done():
			if r.bus != nil {
				r.bus.Close()
			}
		}
	}()
}

// redialDelay is the backoff between connection attempts (1 s doubling to
// 30 s). Only the first failure of an outage is logged.
func (s *Supervisor) redialDelay(err error) time.Duration {
	s.dialFails++
	if err != nil {
		if s.outage.IsZero() {
			s.outage = time.Now()
		}
		if s.dialFails == 1 {
			s.o.Log.WithError(err).Error("cannot reach systemd; retrying with backoff (logged once per outage)")
			s.o.Events.Emit(events.Event{Kind: events.KindSupervisor, Action: "connect", Result: "failed", Message: err.Error()})
		}
		if s.o.Metrics != nil {
			s.o.Metrics.SetBusConnected(false)
		}
	}
	d := time.Second << min(s.dialFails-1, 5)
	return min(d, 30*time.Second)
}

func (s *Supervisor) lost(err error) {
	if s.bus != nil {
		s.bus.Close()
		s.bus = nil
	}
	s.outage = time.Now()
	s.dialFails = 0
	s.o.Log.WithError(err).Warn("lost the connection to systemd; reconnecting with backoff (logged once per outage)")
	s.o.Events.Emit(events.Event{Kind: events.KindSupervisor, Action: "connect", Result: "lost", Message: "lost the connection to systemd: " + err.Error()})
	if s.o.Metrics != nil {
		s.o.Metrics.SetBusConnected(false)
	}
	s.dialFails = 1 // the first retry comes after 1 s
}

// connected adopts a new connection and reconciles the view with systemd's:
// instances that vanished are dropped, every unit is handled as if it had
// just arrived in its state (so a socket that failed while we were away is
// recovered now).
func (s *Supervisor) connected(r dialResult) {
	s.bus = r.bus
	msg := "connected to systemd at " + strings.TrimPrefix(r.bus.Address(), "unix:path=")
	if !s.outage.IsZero() {
		msg = fmt.Sprintf("%s after an outage of %s", msg, time.Since(s.outage).Round(time.Millisecond))
	}
	s.outage, s.dialFails = time.Time{}, 0
	s.o.Events.Emit(events.Event{Kind: events.KindSupervisor, Action: "connect", Result: "done", Message: msg})
	if s.o.Metrics != nil {
		s.o.Metrics.SetBusConnected(true)
	}
	seen := map[string]bool{}
	for _, u := range r.units {
		port, typ, ok := systemd.ParseUnit(u.Name)
		if !ok {
			continue
		}
		seen[u.Name] = true
		in := s.instance(port)
		if typ == "socket" {
			in.listen = r.listen[port]
		}
		s.setUnit(in, typ, u, true)
	}
	for port, in := range s.instances {
		if in.socketSeen && !seen[systemd.SocketUnit(port)] {
			in.socketSeen = false
		}
		if in.serviceSeen && !seen[systemd.ServiceUnit(port)] {
			in.serviceSeen = false
		}
		if in.altSeen && !seen[systemd.AltUnit(port)] {
			in.altSeen = false
		}
		s.gc(in)
	}
	s.updateGauges()
}
