// Package supervisor keeps a host's lodis instances healthy through systemd's
// D-Bus API. systemd owns every process; the supervisor watches the
// lodis@PORT.socket and lodis@PORT.service units by D-Bus signals, probes
// running workers over HTTP, and mends what fails: it resets a failed worker,
// recovers a failed socket, and restarts a hung worker, with backoff per
// instance. It never undoes an administrator's stop.
//
// Every state change and remedy is an Event, kept in a bounded ring, logged,
// counted in Prometheus metrics and handed to an optional hook script. A
// status API on a unix socket serves the instances, the events and the
// metrics (see API); other packages can add handlers to it and emit events.
//
// Outside systemd (no D-Bus) the supervisor keeps its status API up, reports
// the bus as disconnected and keeps trying to connect, with backoff.
package supervisor

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/godbus/dbus/v5"
	"github.com/sirupsen/logrus"
)

// Defaults for the zero fields of Options.
const (
	DefaultProbeInterval = 5 * time.Second
	DefaultProbeTimeout  = 2 * time.Second
	DefaultProbeFailures = 3
	DefaultBackoffMax    = time.Minute
	DefaultBackoffReset  = 5 * time.Minute
	DefaultRemedyTimeout = 30 * time.Second
)

// Options configure a Supervisor.
type Options struct {
	Bus BusOptions // which systemd to watch

	// ProbeInterval is how often running workers are probed (default 5 s).
	// Keep it well below the workers' idle timeout (30 s): a worker that
	// served nothing but the probe since the previous one is not probed
	// again, so that it can exit when idle.
	ProbeInterval time.Duration
	// ProbeTimeout bounds one health probe (default 2 s).
	ProbeTimeout time.Duration
	// ProbeFailures is how many probes in a row a running worker must fail
	// before it is restarted as hung (default 3).
	ProbeFailures int
	// WakeProbeInterval, when positive, is how often each idle port (socket
	// listening, no worker) gets an end-to-end probe that starts a worker,
	// proving the activation path works. Zero (the default) never wakes a
	// worker.
	WakeProbeInterval time.Duration
	// BackoffMax caps the delay between remedies of one kind on one instance
	// (default 1 min); BackoffReset is how long without such a remedy ends
	// the streak (default 5 min).
	BackoffMax, BackoffReset time.Duration
	// RemedyTimeout bounds one remedy's D-Bus calls and jobs (default 30 s).
	RemedyTimeout time.Duration

	Events   *Events            // required: where events go
	Metrics  *Metrics           // optional
	Log      logrus.FieldLogger // required
	Notifier interface{ Notify(string) error }

	dial func() (conn, error) // test hook; default DialBus(Bus)
}

// conn is what the supervisor needs of a bus connection; *Bus implements it.
type conn interface {
	Units
	ListenAddress(ctx context.Context, socket string) (string, error)
	signals() <-chan *dbus.Signal
	where() string
	Connected() bool
	Close()
}

// Supervisor watches and mends lodis instances. Create it with New, run it
// with Run; Snapshot and Units are safe to call from any goroutine while it
// runs.
type Supervisor struct {
	o      Options
	prober *Prober

	// Owned by the Run goroutine.
	bus       conn
	instances map[string]*instance
	started   time.Time
	dialing   bool
	outage    time.Time // when the bus was lost; zero while connected
	dialFails int
	readySent bool
	done      <-chan struct{} // closed when Run's context ends
	hold      string          // who holds the worker remedies ("" = nobody); see HoldWorkers

	// Messages to the Run goroutine.
	dialed    chan dialResult
	fetched   chan fetchResult
	probed    chan probeResult
	due       chan remedyKey
	remedied  chan remedyResult
	snapshots chan chan Snapshot
	units     chan chan Units
	holds     chan string
	stopped   chan struct{} // closed when Run returns
}

type instance struct {
	port             string
	socket, service  UnitState
	socketSeen       bool // loaded, as far as we know
	serviceSeen      bool
	socketStable     string // last stable state, for events' From
	serviceStable    string
	listen           string
	restarts         int
	probe            probeState
	backoff          [nRemedies]backoff
	pending          [nRemedies]bool
	held             [nRemedies]bool // called for while the worker remedies were held
	wakeProbeRunning bool
	gen              [2]uint64 // signals applied to the socket [0] and the service [1]
	fetching         [2]bool   // a read of the socket [0] / service [1] is under way
	announced        bool      // the "watching" event was emitted
	unloadedAt       time.Time // when both units were last seen unloaded
}

func typIndex(typ string) int {
	if typ == "socket" {
		return 0
	}
	return 1
}

type probeState struct {
	running  bool
	pid      uint32 // process the last probe reached
	tried    uint32 // process the last probe was sent to
	failures int    // in a row
	busy     bool   // the last probe saw traffic other than probes
	requests uint64
	last     *Health
	lastErr  string
	lastAt   time.Time
	latency  time.Duration
}

type dialResult struct {
	bus    conn
	units  []UnitState
	listen map[string]string
	err    error
}

type fetchResult struct {
	unit   string
	gen    uint64 // the unit's signal count when the read began
	state  UnitState
	listen string
	err    error
}

type probeResult struct {
	port    string
	pid     uint32
	wake    bool
	health  Health
	latency time.Duration
	err     error
}

type remedyKey struct {
	port string
	kind remedy
}

type remedyResult struct {
	remedyKey
	err error
}

// New checks o and returns a Supervisor.
func New(o Options) (*Supervisor, error) {
	if o.Events == nil || o.Log == nil {
		return nil, fmt.Errorf("supervisor: Options.Events and Options.Log are required")
	}
	if o.ProbeInterval <= 0 {
		o.ProbeInterval = DefaultProbeInterval
	}
	if o.ProbeTimeout <= 0 {
		o.ProbeTimeout = DefaultProbeTimeout
	}
	if o.ProbeFailures <= 0 {
		o.ProbeFailures = DefaultProbeFailures
	}
	if o.BackoffMax <= 0 {
		o.BackoffMax = DefaultBackoffMax
	}
	if o.BackoffReset <= 0 {
		o.BackoffReset = DefaultBackoffReset
	}
	if o.RemedyTimeout <= 0 {
		o.RemedyTimeout = DefaultRemedyTimeout
	}
	if o.dial == nil {
		bo := o.Bus
		o.dial = func() (conn, error) { return DialBus(bo) }
	}
	return &Supervisor{
		o: o, prober: NewProber(o.ProbeTimeout), instances: map[string]*instance{},
		dialed: make(chan dialResult, 1), fetched: make(chan fetchResult, 16),
		probed: make(chan probeResult, 16), due: make(chan remedyKey, 16),
		remedied: make(chan remedyResult, 16), snapshots: make(chan chan Snapshot),
		units: make(chan chan Units), holds: make(chan string), stopped: make(chan struct{}),
	}, nil
}

// Run watches and mends until ctx is cancelled. It returns nil then; the bus
// being unreachable is not an error (it keeps retrying).
func (s *Supervisor) Run(ctx context.Context) error {
	defer close(s.stopped)
	s.started = time.Now()
	s.done = ctx.Done()
	s.o.Events.Emit(Event{Kind: KindSupervisor, Action: "start", Result: "done",
		Message: "supervisor started; connecting to systemd at " + strings.Join(s.o.Bus.Where(), " or ")})
	probeT := time.NewTicker(s.o.ProbeInterval)
	defer probeT.Stop()
	var wakeC <-chan time.Time
	if s.o.WakeProbeInterval > 0 {
		t := time.NewTicker(s.o.WakeProbeInterval)
		defer t.Stop()
		wakeC = t.C
	}
	keep := time.NewTicker(2 * time.Second) // watchdog, STATUS=, bus liveness
	defer keep.Stop()
	var wd <-chan time.Time
	if usec := watchdogInterval(); usec > 0 {
		t := time.NewTicker(usec / 3)
		defer t.Stop()
		wd = t.C
	}
	var redial <-chan time.Time
	s.dial(ctx)
	defer func() {
		if s.bus != nil {
			s.bus.Close()
		}
	}()
	for {
		var sigs <-chan *dbus.Signal
		if s.bus != nil {
			sigs = s.bus.signals()
		}
		select {
		case <-ctx.Done():
			s.notify("STOPPING=1")
			return nil
		case r := <-s.dialed:
			s.dialing = false
			if r.err != nil {
				redial = time.After(s.redialDelay(r.err))
				s.ready()
				continue
			}
			s.connected(r)
			s.ready()
		case <-redial:
			redial = nil
			s.dial(ctx)
		case sig, ok := <-sigs:
			if !ok {
				s.lost(fmt.Errorf("signal connection closed"))
				redial = time.After(s.redialDelay(nil))
				continue
			}
			if c, ok := decodeSignal(sig); ok {
				s.onChange(ctx, c)
				s.probeNew(ctx)
			}
		case f := <-s.fetched:
			s.onFetched(f)
			s.probeNew(ctx)
		case r := <-s.probed:
			s.onProbe(r)
		case k := <-s.due:
			s.runRemedy(ctx, k)
		case r := <-s.remedied:
			s.onRemedied(r)
		case ch := <-s.snapshots:
			ch <- s.snapshot()
		case ch := <-s.units:
			if s.bus != nil {
				ch <- s.bus
			} else {
				ch <- nil
			}
		case who := <-s.holds:
			s.setHold(who)
		case <-probeT.C:
			s.probeRunning(ctx)
		case <-wakeC:
			s.wakeProbe(ctx)
		case <-wd:
			s.notify("WATCHDOG=1")
		case <-keep.C:
			if s.bus != nil && !s.bus.Connected() {
				s.lost(fmt.Errorf("connection closed"))
				redial = time.After(s.redialDelay(nil))
			}
			s.sweep()
			s.notify("STATUS=" + s.statusLine())
		}
	}
}

// Snapshot returns the supervisor's current view; ok is false when it is not
// running (or ctx ends first).
func (s *Supervisor) Snapshot(ctx context.Context) (Snapshot, bool) {
	ch := make(chan Snapshot, 1)
	select {
	case s.snapshots <- ch:
		return <-ch, true
	case <-ctx.Done():
		return Snapshot{}, false
	case <-s.stopped:
		return Snapshot{}, false
	}
}

// Units returns the live D-Bus connection for other packages to act
// through (a roll-out), or nil while systemd is unreachable, after Run has
// returned, or when ctx ends first.
func (s *Supervisor) Units(ctx context.Context) Units {
	ch := make(chan Units, 1)
	select {
	case s.units <- ch:
		return <-ch
	case <-ctx.Done():
		return nil
	case <-s.stopped:
		return nil
	}
}

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
		s.o.Events.Emit(Event{Kind: KindSupervisor, Action: "hold", Result: "done",
			Message: "worker remedies held: " + who + " is restarting workers"})
		return
	}
	s.o.Events.Emit(Event{Kind: KindSupervisor, Action: "resume", Result: "done",
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
		s.o.Events.Emit(Event{Kind: KindRemedy, Instance: in.port, Unit: ServiceUnit(in.port), Action: r.String(),
			Result: "held", Message: "not applied while " + s.hold + " is restarting workers"})
	}
	return true
}

func (s *Supervisor) notify(state string) {
	if s.o.Notifier != nil {
		s.o.Notifier.Notify(state)
	}
}

// ready sends READY=1 once the first connection attempt has ended, however
// it ended: the status API answers either way.
func (s *Supervisor) ready() {
	if !s.readySent {
		s.readySent = true
		s.notify("READY=1\nSTATUS=" + s.statusLine())
	}
}

func (s *Supervisor) statusLine() string {
	if s.bus == nil {
		return "systemd D-Bus unreachable; retrying"
	}
	failed := 0
	for _, in := range s.instances {
		if in.socket.ActiveState == "failed" || in.service.ActiveState == "failed" {
			failed++
		}
	}
	return fmt.Sprintf("watching %d instances (%d failed)", len(s.instances), failed)
}

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
			r.units, r.err = r.bus.ListUnits(lctx, "lodis@*.socket", "lodis@*.service")
			if r.err == nil {
				r.listen = map[string]string{}
				for _, u := range r.units {
					if port, typ, _ := ParseUnit(u.Name); typ == "socket" {
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
			s.o.Events.Emit(Event{Kind: KindSupervisor, Action: "connect", Result: "failed", Message: err.Error()})
		}
		if s.o.Metrics != nil {
			s.o.Metrics.busConnected.Set(0)
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
	s.o.Events.Emit(Event{Kind: KindSupervisor, Action: "connect", Result: "lost", Message: "lost the connection to systemd: " + err.Error()})
	if s.o.Metrics != nil {
		s.o.Metrics.busConnected.Set(0)
	}
	s.dialFails = 1 // the first retry comes after 1 s
}

// connected adopts a new connection and reconciles the view with systemd's:
// instances that vanished are dropped, every unit is handled as if it had
// just arrived in its state (so a socket that failed while we were away is
// recovered now).
func (s *Supervisor) connected(r dialResult) {
	s.bus = r.bus
	msg := "connected to systemd at " + strings.TrimPrefix(r.bus.where(), "unix:path=")
	if !s.outage.IsZero() {
		msg = fmt.Sprintf("%s after an outage of %s", msg, time.Since(s.outage).Round(time.Millisecond))
	}
	s.outage, s.dialFails = time.Time{}, 0
	s.o.Events.Emit(Event{Kind: KindSupervisor, Action: "connect", Result: "done", Message: msg})
	if s.o.Metrics != nil {
		s.o.Metrics.busConnected.Set(1)
	}
	seen := map[string]bool{}
	for _, u := range r.units {
		port, typ, ok := ParseUnit(u.Name)
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
		if in.socketSeen && !seen[SocketUnit(port)] {
			in.socketSeen = false
		}
		if in.serviceSeen && !seen[ServiceUnit(port)] {
			in.serviceSeen = false
		}
		s.gc(in)
	}
	s.updateGauges()
}

func (s *Supervisor) instance(port string) *instance {
	in := s.instances[port]
	if in == nil {
		in = &instance{port: port}
		s.instances[port] = in
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
			if in.announced {
				s.o.Events.Emit(Event{Kind: KindState, Instance: port, Unit: SocketUnit(port),
					From: in.socketStable, To: "unloaded", Message: "instance no longer loaded: not watched any more"})
			}
		}
	}
	s.updateGauges()
}

// onChange handles one decoded signal.
func (s *Supervisor) onChange(ctx context.Context, c unitChange) {
	port, typ, _ := ParseUnit(c.Unit)
	switch {
	case c.Removed:
		in := s.instances[port]
		if in == nil {
			return
		}
		if typ == "socket" {
			in.socketSeen = false
		} else {
			in.serviceSeen = false
		}
		s.gc(in)
		s.updateGauges()
	default:
		in := s.instances[port]
		seen := in != nil && (typ == "socket" && in.socketSeen || typ == "service" && in.serviceSeen)
		if len(c.Props) > 0 {
			// systemd sends every property it announces in each signal, so a
			// signal alone is enough to know the unit's state.
			if in == nil {
				in = s.instance(port)
			}
			in.gen[typIndex(typ)]++
			u := in.service
			if typ == "socket" {
				u = in.socket
			}
			u.Name = c.Unit
			applyProps(&u, c.Props)
			s.setUnit(in, typ, u, false)
		}
		if (c.New || !seen) && (in == nil || !in.fetching[typIndex(typ)]) {
			s.fetch(ctx, c.Unit, in)
		}
	}
}

// fetch reads a unit that just appeared (enabled, started, or referenced)
// off the Run goroutine.
func (s *Supervisor) fetch(ctx context.Context, unit string, in *instance) {
	port, typ, _ := ParseUnit(unit)
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
		f := fetchResult{unit: unit, gen: gen}
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
	port, typ, _ := ParseUnit(f.unit)
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
	if in.gen[typIndex(typ)] != f.gen {
		return // a signal since the read began told us a newer state
	}
	s.setUnit(in, typ, f.state, true)
}

// setUnit records a unit's new state, emits an event when it reached a new
// stable state, and schedules the remedy it calls for.
func (s *Supervisor) setUnit(in *instance, typ string, u UnitState, full bool) {
	var prev *string
	var was UnitState
	if typ == "socket" {
		was, prev = in.socket, &in.socketStable
		if !in.announced && u.ActiveState != "" && u.LoadState != "not-loaded" {
			in.announced = true
			s.o.Events.Emit(Event{Kind: KindState, Instance: in.port, Unit: u.Name, To: u.State(),
				Result: u.Result, Message: "watching " + u.Name})
		}
		in.socket, in.socketSeen = u, u.ActiveState != "" || in.socketSeen
	} else {
		was, prev = in.service, &in.serviceStable
		in.service, in.serviceSeen = u, u.ActiveState != "" || in.serviceSeen
	}
	if u.Name == "" {
		u.Name = unitName(in.port, typ)
		if typ == "socket" {
			in.socket.Name = u.Name
		} else {
			in.service.Name = u.Name
		}
	}
	if !stable(u.ActiveState) {
		s.updateGauges()
		return
	}
	cur := u.State()
	newPID := typ == "service" && u.ActiveState == "active" && u.MainPID != 0 && u.MainPID != was.MainPID
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
	if typ == "service" && u.ActiveState == "failed" {
		in.restarts++
	}
	if from != "" || u.ActiveState == "failed" || typ == "service" && !full {
		s.o.Events.Emit(Event{Kind: KindState, Instance: in.port, Unit: u.Name, From: from, To: cur,
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
	if typ == "socket" {
		return SocketUnit(port)
	}
	return ServiceUnit(port)
}

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
			bus.ResetFailedUnit(rctx, ServiceUnit(k.port)) // may not be loaded or failed: fine
			if err = bus.ResetFailedUnit(rctx, SocketUnit(k.port)); err == nil {
				err = bus.StartUnit(rctx, SocketUnit(k.port))
			}
		case remedyResetService:
			err = bus.ResetFailedUnit(rctx, ServiceUnit(k.port))
		case remedyRestart:
			err = bus.RestartUnit(rctx, ServiceUnit(k.port))
		}
		select {
		case s.remedied <- remedyResult{k, err}:
		case <-ctx.Done():
		}
	}()
}

func (s *Supervisor) onRemedied(r remedyResult) {
	in := s.instances[r.port]
	e := Event{Kind: KindRemedy, Instance: r.port, Action: r.kind.String(), Result: "done"}
	switch r.kind {
	case remedyRecoverSocket:
		e.Unit, e.Message = SocketUnit(r.port), "socket reset and started again"
	case remedyResetService:
		e.Unit, e.Message = ServiceUnit(r.port), "failed worker reset; the socket starts a fresh one on the next connection"
	case remedyRestart:
		e.Unit, e.Message = ServiceUnit(r.port), fmt.Sprintf("hung worker restarted after %d failed health probes", s.o.ProbeFailures)
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
		s.o.Metrics.remedies.WithLabelValues(r.kind.String(), e.Result).Inc()
	}
	// A recovery that failed leaves the socket failed with no new signal to
	// come: try again, after the backoff.
	if r.err != nil && in != nil && r.kind == remedyRecoverSocket && in.socket.ActiveState == "failed" {
		s.schedule(in, r.kind)
	}
}

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
	addr := probeAddr(in.listen, in.port)
	port := in.port
	go func() {
		pctx, cancel := context.WithTimeout(ctx, s.o.ProbeTimeout)
		defer cancel()
		r := probeResult{port: port, pid: pid, wake: wake}
		r.health, r.latency, r.err = s.prober.Probe(pctx, addr)
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
		s.o.Metrics.probeLatency.WithLabelValues(kind, res).Observe(r.latency.Seconds())
	}
	in := s.instances[r.port]
	if in == nil {
		return
	}
	if r.wake {
		in.wakeProbeRunning = false
		e := Event{Kind: KindWakeProbe, Instance: r.port, Unit: SocketUnit(r.port), Action: "wake-probe", Result: "done",
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
			s.o.Events.Emit(Event{Kind: KindProbe, Instance: r.port, Unit: ServiceUnit(r.port), To: "unhealthy",
				Result: "failed", Message: fmt.Sprintf("health probe %d of %d failed: %s", p.failures, s.o.ProbeFailures, r.err)})
		}
		if p.failures >= s.o.ProbeFailures && in.service.ActiveState == "active" && in.service.MainPID == r.pid {
			s.schedule(in, remedyRestart)
		}
		return
	}
	if p.failures > 0 {
		s.o.Events.Emit(Event{Kind: KindProbe, Instance: r.port, Unit: ServiceUnit(r.port), From: "unhealthy", To: "healthy",
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

func (s *Supervisor) updateGauges() {
	if s.o.Metrics == nil {
		return
	}
	s.o.Metrics.instances.Reset()
	for _, in := range s.instances {
		sock, work := in.socket.ActiveState, in.service.ActiveState
		if sock == "" || !in.socketSeen {
			sock = "inactive"
		}
		if work == "" || !in.serviceSeen {
			work = "inactive"
		}
		s.o.Metrics.instances.WithLabelValues(sock, work).Inc()
	}
}

// snapshot builds the status view.
func (s *Supervisor) snapshot() Snapshot {
	now := time.Now()
	snap := Snapshot{Connected: s.bus != nil, Since: s.started, Instances: []InstanceStatus{}}
	if s.bus != nil {
		snap.Bus = strings.TrimPrefix(s.bus.where(), "unix:path=")
	}
	for _, in := range s.instances {
		st := InstanceStatus{Port: in.port, Socket: in.socket.State(), SocketResult: in.socket.Result,
			Worker: in.service.State(), WorkerResult: in.service.Result, Restarts: in.restarts}
		if !in.socketSeen {
			st.Socket = "not-loaded"
		}
		if !in.serviceSeen || in.service.ActiveState == "" {
			st.Worker = "inactive/dead"
		}
		if in.service.ActiveState == "active" {
			st.PID = in.service.MainPID
			if !in.service.ActiveEnter.IsZero() {
				st.UptimeSeconds = now.Sub(in.service.ActiveEnter).Seconds()
			}
			if h := in.probe.last; h != nil && uint32(h.PID) == in.service.MainPID {
				st.Version, st.SHA256 = h.Version, h.SHA256
			}
		}
		if !in.probe.lastAt.IsZero() {
			hs := &ProbeStatus{OK: in.probe.lastErr == "", Error: in.probe.lastErr, At: in.probe.lastAt,
				LatencyMS: float64(in.probe.latency.Microseconds()) / 1000, Failures: in.probe.failures}
			st.Health = hs
		}
		snap.Instances = append(snap.Instances, st)
	}
	sort.Slice(snap.Instances, func(i, j int) bool { return portLess(snap.Instances[i].Port, snap.Instances[j].Port) })
	return snap
}

func portLess(a, b string) bool {
	if len(a) != len(b) {
		return len(a) < len(b)
	}
	return a < b
}

// watchdogInterval is WatchdogSec= as passed by systemd; 0 when unset.
func watchdogInterval() time.Duration {
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		return 0
	}
	return d
}
