package supervisor

import (
	"context"
	"strings"
	"time"

	"github.com/lodis/lodis/internal/events"
	"github.com/lodis/lodis/internal/systemd"
)

func typIndex(typ string) int {
	switch typ {
	case "socket":
		return 0
	case "alt":
		return 2
	}
	return 1
}

// worker is the unit that serves port now, and its state: the port's own
// worker while it runs, else its alternate while that runs (after a
// roll-out), else the port's own (idle).
func (in *instance) worker() (string, systemd.UnitState) {
	if in.service.ActiveState != "active" && in.alt.ActiveState == "active" {
		return systemd.AltUnit(in.port), in.alt
	}
	return systemd.ServiceUnit(in.port), in.service
}

// running lists the port's worker units that run.
func (in *instance) running() []string {
	var out []string
	if in.service.ActiveState == "active" {
		out = append(out, systemd.ServiceUnit(in.port))
	}
	if in.alt.ActiveState == "active" {
		out = append(out, systemd.AltUnit(in.port))
	}
	return out
}

func (s *Supervisor) instance(port string) *instance {
	in := s.instances[port]
	if in == nil {
		in = &instance{port: port}
		s.instances[port] = in
		if s.o.Metrics != nil {
			s.o.Metrics.WatchPort(port)
		}
	}
	return in
}

// gc notes that an instance's units may both be gone; sweep forgets it if
// they stay gone (a daemon-reload unloads and reloads every unit at once).
func (s *Supervisor) gc(in *instance) {
	if !in.socketSeen && !in.serviceSeen && in.unloadedAt.IsZero() {
		in.unloadedAt = time.Now()
	}
}

// sweep forgets instances unloaded for more than 2 s.
func (s *Supervisor) sweep() {
	for port, in := range s.instances {
		if in.socketSeen || in.serviceSeen {
			in.unloadedAt = time.Time{}
			continue
		}
		if !in.unloadedAt.IsZero() && time.Since(in.unloadedAt) > 2*time.Second {
			delete(s.instances, port)
			if s.o.Metrics != nil {
				s.o.Metrics.ForgetPort(port)
			}
			if in.announced {
				s.o.Events.Emit(events.Event{Kind: events.KindState, Instance: port, Unit: systemd.SocketUnit(port),
					From: in.socketStable, To: "unloaded", Message: "instance no longer loaded: not watched any more"})
			}
		}
	}
	s.updateGauges()
}

// onChange handles one decoded signal.
func (s *Supervisor) onChange(ctx context.Context, c systemd.UnitChange) {
	port, typ, _ := systemd.ParseUnit(c.Unit)
	switch {
	case c.Removed:
		in := s.instances[port]
		if in == nil {
			return
		}
		switch typ {
		case "socket":
			in.socketSeen = false
		case "alt":
			in.altSeen = false
		default:
			in.serviceSeen = false
		}
		s.gc(in)
		s.updateGauges()
	default:
		in := s.instances[port]
		seen := in != nil && (typ == "socket" && in.socketSeen || typ == "service" && in.serviceSeen || typ == "alt" && in.altSeen)
		if len(c.Props) > 0 {
			// systemd sends every property it announces in each signal, so a
			// signal alone is enough to know the unit's state.
			if in == nil {
				in = s.instance(port)
			}
			in.gen[typIndex(typ)]++
			u := in.service
			switch typ {
			case "socket":
				u = in.socket
			case "alt":
				u = in.alt
			}
			u.Name = c.Unit
			c.Apply(&u)
			s.setUnit(in, typ, u, false)
		}
		if (c.New || !seen) && (in == nil || !in.fetching[typIndex(typ)]) {
			s.fetch(ctx, c.Unit, in, false)
		}
	}
}

// fetch reads a unit that just appeared (enabled, started, or referenced)
// off the Run goroutine.
func (s *Supervisor) fetch(ctx context.Context, unit string, in *instance, settings bool) {
	port, typ, _ := systemd.ParseUnit(unit)
	if in == nil {
		in = s.instance(port)
	}
	// One read per unit at a time: while systemd reloads it answers nothing
	// but keeps signalling, and a read per signal would pile up calls.
	in.fetching[typIndex(typ)] = true
	gen := in.gen[typIndex(typ)]
	bus := s.bus
	go func() {
		fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		f := fetchResult{unit: unit, gen: gen, settings: settings}
		f.state, f.err = bus.UnitState(fctx, unit)
		if f.err == nil && typ == "socket" {
			f.listen, _ = bus.ListenAddress(fctx, unit)
		}
		select {
		case s.fetched <- f:
		case <-ctx.Done():
		}
	}()
}

func (s *Supervisor) onFetched(f fetchResult) {
	port, typ, _ := systemd.ParseUnit(f.unit)
	if in := s.instances[port]; in != nil {
		in.fetching[typIndex(typ)] = false
	}
	if f.err != nil {
		s.o.Log.WithError(f.err).WithField("unit", f.unit).Debug("could not read a new unit")
		return
	}
	if f.state.LoadState != "loaded" {
		return // gone again already, or never loaded
	}
	in := s.instance(port)
	if typ == "socket" && f.listen != "" {
		in.listen = f.listen
	}
	if f.settings || in.gen[typIndex(typ)] != f.gen {
		// Only the settings were asked for, or a signal since the read
		// began told us a newer state: what no signal carries (the unit's
		// settings) is taken all the same.
		switch typ {
		case "service":
			in.service.Environment, in.service.UnitFileState = f.state.Environment, f.state.UnitFileState
		case "alt":
			in.alt.Environment = f.state.Environment
		default:
			in.socket.UnitFileState = f.state.UnitFileState
		}
		return
	}
	s.setUnit(in, typ, f.state, true)
}

// setUnit records a unit's new state, emits an event when it reached a new
// stable state, and schedules the remedy it calls for.
func (s *Supervisor) setUnit(in *instance, typ string, u systemd.UnitState, full bool) {
	var prev *string
	var was systemd.UnitState
	if typ == "socket" {
		was, prev = in.socket, &in.socketStable
		if !in.announced && u.ActiveState != "" && u.LoadState != "not-loaded" {
			in.announced = true
			s.o.Events.Emit(events.Event{Kind: events.KindState, Instance: in.port, Unit: u.Name, To: u.State(),
				Result: u.Result, Message: "watching " + u.Name})
		}
		in.socket, in.socketSeen = u, u.ActiveState != "" || in.socketSeen
	} else if typ == "alt" {
		was, prev = in.alt, &in.altStable
		in.alt, in.altSeen = u, u.ActiveState != "" || in.altSeen
	} else {
		was, prev = in.service, &in.serviceStable
		in.service, in.serviceSeen = u, u.ActiveState != "" || in.serviceSeen
	}
	if u.Name == "" {
		u.Name = unitName(in.port, typ)
		switch typ {
		case "socket":
			in.socket.Name = u.Name
		case "alt":
			in.alt.Name = u.Name
		default:
			in.service.Name = u.Name
		}
	}
	if !stable(u.ActiveState) {
		s.updateGauges()
		return
	}
	cur := u.State()
	worker := typ == "service" || typ == "alt"
	newPID := worker && u.ActiveState == "active" && u.MainPID != 0 && u.MainPID != was.MainPID
	if worker {
		s.noteWorker(in)
		s.noteActivation(in, false, time.Now())
	}
	from := *prev
	*prev = cur
	// An event when the ActiveState changes, or a new worker process runs.
	// A socket flipping between listening and running (a worker started or
	// exited) is the worker's news, not the socket's.
	if activeOf(from) == u.ActiveState && (cur == from || typ == "socket") && !newPID {
		s.updateGauges()
		return
	}
	msg, r := classify(typ, from, u)
	if typ == "socket" && from == "failed/failed" && in.pending[remedyRecoverSocket] {
		msg = "socket reset by the supervisor"
	}
	if worker && u.ActiveState == "failed" {
		in.restarts++
		if s.o.Metrics != nil {
			s.o.Metrics.CountWorkerFailure(in.port)
		}
	}
	if from != "" || u.ActiveState == "failed" || worker && !full {
		s.o.Events.Emit(events.Event{Kind: events.KindState, Instance: in.port, Unit: u.Name, From: from, To: cur,
			Result: u.Result, Message: msg})
	}
	s.updateGauges()
	if r != remedyNone {
		s.schedule(in, r)
	}
}

// activeOf is the ActiveState part of "ActiveState/SubState".
func activeOf(state string) string {
	a, _, _ := strings.Cut(state, "/")
	return a
}

func unitName(port, typ string) string {
	switch typ {
	case "socket":
		return systemd.SocketUnit(port)
	case "alt":
		return systemd.AltUnit(port)
	}
	return systemd.ServiceUnit(port)
}
