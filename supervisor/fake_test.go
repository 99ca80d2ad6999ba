package supervisor

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/lodis/lodis/internal/events"
	"github.com/lodis/lodis/internal/metrics"
	"github.com/lodis/lodis/internal/systemd"
)

// fakeConn stands in for systemd in unit tests of the state machine: it
// records the calls and lets the test send signals.
type fakeConn struct {
	mu      sync.Mutex
	calls   []string
	units   []systemd.UnitState
	listen  map[string]string
	sigs    chan systemd.UnitChange
	closed  bool
	failJob error
}

func newFake(units ...systemd.UnitState) *fakeConn {
	return &fakeConn{units: units, listen: map[string]string{}, sigs: make(chan systemd.UnitChange, 64)}
}

func (f *fakeConn) record(s string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, s)
	return f.failJob
}
func (f *fakeConn) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}
func (f *fakeConn) StartUnit(_ context.Context, n string) error   { return f.record("start " + n) }
func (f *fakeConn) StopUnit(_ context.Context, n string) error    { return f.record("stop " + n) }
func (f *fakeConn) RestartUnit(_ context.Context, n string) error { return f.record("restart " + n) }
func (f *fakeConn) TryRestartUnit(_ context.Context, n string) error {
	return f.record("try-restart " + n)
}
func (f *fakeConn) EnqueueRestartUnit(_ context.Context, n string) error {
	return f.record("enqueue-restart " + n)
}
func (f *fakeConn) ResetFailedUnit(_ context.Context, n string) error {
	f.record("reset-failed " + n)
	return nil
}
func (f *fakeConn) UnitState(_ context.Context, n string) (systemd.UnitState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, u := range f.units {
		if u.Name == n {
			return u, nil
		}
	}
	return systemd.UnitState{Name: n, LoadState: "not-loaded", ActiveState: "inactive", SubState: "dead"}, nil
}
func (f *fakeConn) ListUnits(context.Context, ...string) ([]systemd.UnitState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]systemd.UnitState(nil), f.units...), nil
}
func (f *fakeConn) ListenAddress(_ context.Context, s string) (string, error) {
	return f.listen[s], nil
}
func (f *fakeConn) Changes() <-chan systemd.UnitChange { return f.sigs }
func (f *fakeConn) Address() string                    { return "fake" }
func (f *fakeConn) Connected() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.closed
}
func (f *fakeConn) Close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
}

// propsSignal is the change a PropertiesChanged signal for unit decodes to
// (the D-Bus interface it came on does not matter).
func propsSignal(unit, _ string, props map[string]any) systemd.UnitChange {
	return systemd.UnitChange{Unit: unit, Props: props}
}

func unitSignal(unit, active, sub string) systemd.UnitChange {
	return propsSignal(unit, "org.freedesktop.systemd1.Unit", map[string]any{"ActiveState": active, "SubState": sub})
}

func quietLog() *logrus.Logger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

// harness runs a Supervisor against fake connections handed out in order.
type harness struct {
	t      *testing.T
	sup    *Supervisor
	events *events.Stream
	cancel context.CancelFunc
	done   chan struct{}
}

func startHarness(t *testing.T, o Options, conns ...*fakeConn) *harness {
	t.Helper()
	var mu sync.Mutex
	i := 0
	o.dial = func() (conn, error) {
		mu.Lock()
		defer mu.Unlock()
		if i >= len(conns) {
			return nil, fmt.Errorf("no bus here")
		}
		i++
		return conns[i-1], nil
	}
	h := &harness{t: t, events: events.New(256, nil), done: make(chan struct{})}
	o.Events, o.Log = h.events, quietLog()
	if o.Metrics == nil {
		o.Metrics = metrics.New()
	}
	sup, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	h.sup = sup
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { sup.Run(ctx); close(h.done) }()
	t.Cleanup(func() { cancel(); <-h.done })
	return h
}

// waitFor polls cond for up to 10 s.
func (h *harness) waitFor(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out waiting for %s; events:%s", what, h.describe())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (h *harness) describe() string {
	var b strings.Builder
	for _, e := range h.events.Since(0) {
		fmt.Fprintf(&b, "\n  #%d %s %s %s→%s %s %s: %s", e.Seq, e.Kind, e.Unit, e.From, e.To, e.Action, e.Result, e.Message)
	}
	return b.String()
}

func (h *harness) find(match func(events.Event) bool) (events.Event, bool) {
	for _, e := range h.events.Since(0) {
		if match(e) {
			return e, true
		}
	}
	return events.Event{}, false
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (f *fakeConn) EnqueueStopUnit(_ context.Context, n string) error { return f.record("stop " + n) }
func (f *fakeConn) EnqueueStartUnit(_ context.Context, n string) error {
	return f.record("start " + n)
}
func (f *fakeConn) UnitPIDs(context.Context, string) ([]int, error) { return nil, nil }

// signal sends a unit change as systemd would, after applying it to the
// state the fake answers reads with: systemd answers a read with the state
// it just signalled.
func (f *fakeConn) signal(c systemd.UnitChange) {
	f.mu.Lock()
	found := false
	for i := range f.units {
		if f.units[i].Name == c.Unit {
			c.Apply(&f.units[i])
			found = true
		}
	}
	if !found && len(c.Props) > 0 {
		u := systemd.UnitState{Name: c.Unit, LoadState: "loaded"}
		c.Apply(&u)
		f.units = append(f.units, u)
	}
	f.mu.Unlock()
	f.sigs <- c
}
