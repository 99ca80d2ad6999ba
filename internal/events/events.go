// Package events is the supervisor's event stream: every state change,
// remedy, probe verdict and roll-out step is an Event, kept in a bounded ring
// (Stream), logged, and fanned out to subscribers such as the metrics and the
// --on-event Hook.
package events

import (
	"strconv"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/lodis/lodis/internal/cli"
)

// Event kinds.
const (
	KindState      = "state"      // a unit changed state
	KindRemedy     = "remedy"     // the supervisor acted on a unit
	KindProbe      = "probe"      // a health probe changed verdict
	KindWakeProbe  = "wake-probe" // an end-to-end probe of an idle port
	KindSupervisor = "supervisor" // the supervisor itself: bus lost or regained, started, remedies held
	KindRollout    = "rollout"    // a step of an upgrade roll-out: Action is the step
)

// Event is one thing that happened to an instance (or to the supervisor): a
// state change, a remedy and its result, a probe verdict. Events are kept in a
// bounded ring, logged, counted and handed to the --on-event hook.
type Event struct {
	Seq      uint64    `json:"seq"`                // assigned by Emit, from 1, increasing
	Time     time.Time `json:"time"`               // set by Emit when zero
	Kind     string    `json:"kind"`               // KindState, KindRemedy, …
	Instance string    `json:"instance,omitempty"` // the port, "" for the supervisor itself
	Unit     string    `json:"unit,omitempty"`     // e.g. lodis@8080.service
	From     string    `json:"from,omitempty"`     // previous state, e.g. "active/running"
	To       string    `json:"to,omitempty"`       // new state, e.g. "failed/failed"
	Action   string    `json:"action,omitempty"`   // remedy taken: reset-failed, start, restart; "" for none
	Result   string    `json:"result,omitempty"`   // outcome: "done", "failed", or a systemd Result= value
	Message  string    `json:"message,omitempty"`  // one human line
}

// Env returns the event as environment variables for a hook script:
// LODIS_EVENT_SEQ, _TIME (RFC 3339, UTC), _KIND, _INSTANCE, _UNIT, _FROM, _TO,
// _ACTION, _RESULT and _MESSAGE; empty fields are set to "". Text that may
// come from a worker (the message quotes its answers) has its control
// characters replaced and is cut to a bound (cli.Clean).
func (e Event) Env() []string {
	c := func(s string) string { return cli.Clean(s, 200) }
	return []string{
		"LODIS_EVENT_SEQ=" + strconv.FormatUint(e.Seq, 10),
		"LODIS_EVENT_TIME=" + e.Time.UTC().Format(time.RFC3339Nano),
		"LODIS_EVENT_KIND=" + c(e.Kind),
		"LODIS_EVENT_INSTANCE=" + c(e.Instance),
		"LODIS_EVENT_UNIT=" + c(e.Unit),
		"LODIS_EVENT_FROM=" + c(e.From),
		"LODIS_EVENT_TO=" + c(e.To),
		"LODIS_EVENT_ACTION=" + c(e.Action),
		"LODIS_EVENT_RESULT=" + c(e.Result),
		"LODIS_EVENT_MESSAGE=" + cli.Clean(e.Message, 1000),
	}
}

func (e Event) fields() logrus.Fields {
	f := logrus.Fields{"event": e.Kind, "seq": e.Seq}
	for k, v := range map[string]string{"instance": e.Instance, "unit": e.Unit, "from": e.From,
		"to": e.To, "action": e.Action, "result": e.Result} {
		if v != "" {
			f[k] = v
		}
	}
	return f
}

// Emitter accepts events; *Stream implements it. Emit must not block for
// long: it is called from the supervisor's state machine.
type Emitter interface {
	Emit(Event) Event
}

// DefaultRingSize is how many events a Stream keeps when given no size.
const DefaultRingSize = 1024

// Stream is the supervisor's event stream: a bounded in-memory ring of the
// latest events plus a fan-out to the log and to subscribers (the hook
// runner, the metrics). It is safe for concurrent use.
type Stream struct {
	log  logrus.FieldLogger
	mu   sync.Mutex
	ring []Event
	next int // index of the slot the next event goes to
	full bool
	seq  uint64
	subs []func(Event)
}

// New returns a stream keeping the last size events (DefaultRingSize when
// size <= 0) and logging each one to log (nil: not logged).
func New(size int, log logrus.FieldLogger) *Stream {
	if size <= 0 {
		size = DefaultRingSize
	}
	return &Stream{ring: make([]Event, size), log: log}
}

// Subscribe calls f, in the emitting goroutine, for every later event. f must
// not block.
func (s *Stream) Subscribe(f func(Event)) {
	s.mu.Lock()
	s.subs = append(s.subs, f)
	s.mu.Unlock()
}

// Emit stamps e with the next sequence number (and the time, when zero),
// stores it, logs it and passes it to subscribers. It returns the stamped event.
func (s *Stream) Emit(e Event) Event {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	s.mu.Lock()
	s.seq++
	e.Seq = s.seq
	s.ring[s.next] = e
	s.next = (s.next + 1) % len(s.ring)
	if s.next == 0 {
		s.full = true
	}
	subs := s.subs
	s.mu.Unlock()
	if s.log != nil {
		l := s.log.WithFields(e.fields())
		switch {
		case e.Result == "failed" || e.To == "failed/failed":
			l.Warn(e.Message)
		default:
			l.Info(e.Message)
		}
	}
	for _, f := range subs {
		f(e)
	}
	return e
}

// Since returns the stored events with Seq > after, oldest first.
func (s *Stream) Since(after uint64) []Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Event
	n, start := s.next, 0
	if s.full {
		n, start = len(s.ring), s.next
	}
	for i := 0; i < n; i++ {
		e := s.ring[(start+i)%len(s.ring)]
		if e.Seq > after {
			out = append(out, e)
		}
	}
	return out
}
