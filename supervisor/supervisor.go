// Package supervisor keeps a host's lodis instances healthy through systemd's
// D-Bus API. systemd owns every process; the supervisor watches the
// lodis@PORT.socket and lodis@PORT.service units by D-Bus signals, probes
// running workers over HTTP, and mends what fails: it resets a failed worker,
// recovers a failed socket, and restarts a hung worker, with backoff per
// instance. It never undoes an administrator's stop.
//
// One goroutine (Run) owns every instance's state. D-Bus changes, probe
// results, remedy results, holds and status queries reach it over channels;
// the D-Bus calls, probes and remedies themselves run in goroutines of their
// own and report back. Every state change and remedy is an event (package
// events), counted in the metrics (package metrics); Snapshot is what the
// status API (package statusapi) serves.
//
// Outside systemd (no D-Bus) the supervisor keeps running, reports the bus
// as disconnected and keeps trying to connect, with backoff.
//
// Files: supervisor.go the loop and its messages; conn.go the connection's
// lifecycle; track.go unit tracking; remedy.go and policy.go remedies;
// probe.go health probes; hold.go holds; snapshot.go the status view;
// observe.go what the metrics are told.
package supervisor

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/sirupsen/logrus"

	"github.com/lodis/lodis/internal/events"
	"github.com/lodis/lodis/internal/health"
	"github.com/lodis/lodis/internal/metrics"
	"github.com/lodis/lodis/internal/release"
	"github.com/lodis/lodis/internal/sockets"
	"github.com/lodis/lodis/internal/statusapi"
	"github.com/lodis/lodis/internal/systemd"
)

// countInterval is how often the kernel's connection counts are read.
const countInterval = 500 * time.Millisecond

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
	Bus systemd.BusOptions // which systemd to watch

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

	Events   *events.Stream     // required: where events go
	Metrics  *metrics.Metrics   // optional
	Log      logrus.FieldLogger // required
	Notifier interface{ Notify(string) error }
	// Releases, if set, tells which release each worker runs (from its
	// command line: release.Store.ReleaseOf).
	Releases *release.Store
	// Sockets reads the kernel's connection counts of the ports, every 2 s:
	// a worker with established connections is busy (it is probed), one
	// without any for its app's IDLE_TIMEOUT is stopped. Default
	// sockets.Snapshot.
	Sockets func(ports map[string]bool) (map[string]sockets.Counts, error)

	dial func() (conn, error) // test hook; default systemd.Dial(Bus)
}

// conn is what the supervisor needs of a bus connection; *systemd.Bus
// implements it.
type conn interface {
	systemd.Units
	Changes() <-chan systemd.UnitChange
	Address() string
	Connected() bool
	Close()
}

// Supervisor watches and mends lodis instances. Create it with New, run it
// with Run; Snapshot and Units are safe to call from any goroutine while it
// runs.
type Supervisor struct {
	o      Options
	prober *health.Client

	// Owned by the Run goroutine.
	bus         conn
	instances   map[string]*instance
	started     time.Time
	dialing     bool
	outage      time.Time // when the bus was lost; zero while connected
	dialFails   int
	readySent   bool
	connsFailed bool            // the socket table could not be read (logged once)
	done        <-chan struct{} // closed when Run's context ends
	runCtx      context.Context // Run's context, for the reads the state machine starts
	hold        string          // who holds the worker remedies ("" = nobody); see HoldWorkers
	holdUntil   time.Time       // when a lease (HoldWorkersFor) ends; zero for none
	holdTimer   *time.Timer

	// Messages to the Run goroutine.
	dialed    chan dialResult
	fetched   chan fetchResult
	probed    chan probeResult
	due       chan remedyKey
	remedied  chan remedyResult
	snapshots chan chan statusapi.Snapshot
	units     chan chan systemd.Units
	holds     chan holdReq
	stopped   chan struct{} // closed when Run returns
}

type instance struct {
	port             string
	socket, service  systemd.UnitState
	alt              systemd.UnitState // the alternate worker (lodis-alt@PORT.service), run by roll-outs
	socketSeen       bool              // loaded, as far as we know
	serviceSeen      bool
	altSeen          bool
	socketStable     string // last stable state, for events' From
	serviceStable    string
	altStable        string
	listen           string
	restarts         int
	probe            probeState
	backoff          [nRemedies]backoff
	pending          [nRemedies]bool
	held             [nRemedies]bool // called for while the worker remedies were held
	wakeProbeRunning bool
	gen              [3]uint64 // signals applied to the socket [0], the service [1], the alternate [2]
	fetching         [3]bool   // a read of the socket [0] / service [1] / alternate [2] is under way
	announced        bool      // the "watching" event was emitted
	unloadedAt       time.Time // when both units were last seen unloaded
	release          string    // the release the worker's main process runs; "" unknown
	releasePID       uint32    // the process release was read of
	conns            sockets.Counts
	idleSince        time.Time // since when the port has had no established connection; zero while it has
	activationSeen   time.Time // InactiveExit of the last worker start recorded in the metrics
}

type probeState struct {
	running  bool
	pid      uint32 // process the last probe reached (the unit's main process then)
	tried    uint32 // process the last probe was sent to
	failures int    // in a row
	busy     bool   // the last probe saw traffic other than probes
	requests uint64
	last     *health.Report
	lastErr  string
	lastAt   time.Time
	latency  time.Duration
}

type dialResult struct {
	bus    conn
	units  []systemd.UnitState
	listen map[string]string
	err    error
}

type fetchResult struct {
	unit   string
	gen    uint64 // the unit's signal count when the read began
	state  systemd.UnitState
	listen string
	err    error
	// settings: only what no signal carries is wanted (the unit's
	// Environment=), not its state.
	settings bool
}

type probeResult struct {
	port    string
	pid     uint32
	wake    bool
	health  health.Report
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
		o.dial = func() (conn, error) { return systemd.Dial(bo) }
	}
	if o.Sockets == nil {
		o.Sockets = sockets.Snapshot
	}
	return &Supervisor{
		o: o, prober: &health.Client{Timeout: maxProbeTimeout, UserAgent: "lodis-supervisor"}, instances: map[string]*instance{},
		dialed: make(chan dialResult, 1), fetched: make(chan fetchResult, 16),
		probed: make(chan probeResult, 16), due: make(chan remedyKey, 16),
		remedied: make(chan remedyResult, 16), snapshots: make(chan chan statusapi.Snapshot),
		units: make(chan chan systemd.Units), holds: make(chan holdReq), stopped: make(chan struct{}),
	}, nil
}

// Run watches and mends until ctx is cancelled. It returns nil then; the bus
// being unreachable is not an error (it keeps retrying).
func (s *Supervisor) Run(ctx context.Context) error {
	defer close(s.stopped)
	s.started = time.Now()
	s.done, s.runCtx = ctx.Done(), ctx
	s.o.Events.Emit(events.Event{Kind: events.KindSupervisor, Action: "start", Result: "done",
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
	counts := time.NewTicker(countInterval) // the kernel's connection counts
	defer counts.Stop()
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
		var changes <-chan systemd.UnitChange
		if s.bus != nil {
			changes = s.bus.Changes()
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
		case c, ok := <-changes:
			if !ok {
				s.lost(fmt.Errorf("signal connection closed"))
				redial = time.After(s.redialDelay(nil))
				continue
			}
			s.onChange(ctx, c)
			s.probeNew(ctx)
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
		case r := <-s.holds:
			s.onHold(r)
		case <-s.holdC():
			s.holdExpired()
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
		case <-counts.C:
			s.countConns()
		}
	}
}

// Snapshot returns the supervisor's current view; ok is false when it is not
// running (or ctx ends first).
func (s *Supervisor) Snapshot(ctx context.Context) (statusapi.Snapshot, bool) {
	ch := make(chan statusapi.Snapshot, 1)
	select {
	case s.snapshots <- ch:
		return <-ch, true
	case <-ctx.Done():
		return statusapi.Snapshot{}, false
	case <-s.stopped:
		return statusapi.Snapshot{}, false
	}
}

// Units returns the live D-Bus connection for other packages to act
// through (a roll-out), or nil while systemd is unreachable, after Run has
// returned, or when ctx ends first.
func (s *Supervisor) Units(ctx context.Context) systemd.Units {
	ch := make(chan systemd.Units, 1)
	select {
	case s.units <- ch:
		return <-ch
	case <-ctx.Done():
		return nil
	case <-s.stopped:
		return nil
	}
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
		if in.socket.ActiveState == "failed" || in.service.ActiveState == "failed" || in.alt.ActiveState == "failed" {
			failed++
		}
	}
	return fmt.Sprintf("watching %d instances (%d failed)", len(s.instances), failed)
}

// watchdogInterval is WatchdogSec= as passed by systemd; 0 when unset.
func watchdogInterval() time.Duration {
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		return 0
	}
	return d
}
