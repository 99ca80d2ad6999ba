package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/lodis/lodis/internal/buildinfo"
	"github.com/lodis/lodis/internal/events"
	"github.com/lodis/lodis/internal/metrics"
	"github.com/lodis/lodis/internal/release"
	"github.com/lodis/lodis/internal/statusapi"
	"github.com/lodis/lodis/internal/systemd"
)

// Defaults of a roll-out request that names no timing.
const (
	DefaultCanarySoak    = 5 * time.Second
	DefaultHealthTimeout = 15 * time.Second
	// DefaultRestartWait is how long a supervisor that queued its own
	// restart waits to be stopped before it finishes the roll-out itself.
	DefaultRestartWait = 30 * time.Second
)

// Duration is a time.Duration written in JSON as a Go duration string
// ("5s", "1m30s").
type Duration time.Duration

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a duration such as \"5s\", got %s", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// Request is the body of POST /v1/rollout: move every running worker to the
// release SHA256, which must be in the store already (`lodis upgrade`
// validates and imports a drop first).
type Request struct {
	// Kind is KindUpgrade (the default) or KindRollback; it only labels the
	// roll-out.
	Kind   string `json:"kind,omitempty"`
	SHA256 string `json:"sha256"`
	// CanarySoak is how long the canary is watched; 0: DefaultCanarySoak.
	CanarySoak Duration `json:"canary_soak,omitempty"`
	// HealthTimeout is how long a restarted worker has to report the new
	// release; 0: DefaultHealthTimeout.
	HealthTimeout Duration `json:"health_timeout,omitempty"`
}

// Host is what a Service needs of the supervisor; *supervisor.Supervisor
// implements it.
type Host interface {
	// Units is the supervisor's live D-Bus connection, nil while systemd is
	// unreachable.
	Units(ctx context.Context) systemd.Units
	// HoldWorkers keeps the supervisor from mending workers the roll-out
	// restarts on purpose, until resume is called.
	HoldWorkers(ctx context.Context, who string) (resume func())
}

// Service drives roll-outs inside the supervisor (`lodis supervise`): it
// serves POST and GET /v1/rollout on the status API (docs/supervisor.md
// says what they answer). Set its fields, Register it, then Run it beside
// the supervisor.
//
// One roll-out runs at a time, in a goroutine of its own, through the
// supervisor's D-Bus connection; meanwhile the supervisor's worker remedies
// are held (HoldWorkers), so that no worker is restarted twice. Every step
// is a supervisor event of kind supervisor.KindRollout. The supervisor
// itself moves last: it persists the roll-out in PhaseSupervisor and queues
// the restart of its own unit, whose next process — the new binary, through
// /var/lib/lodis/current — finishes it. At start, a roll-out left unfinished
// (the supervisor was killed, or restarted itself) is taken up: finished, or
// rolled back when its canary had not passed (Runner.Run). A supervisor that
// finds itself on another binary than the active release after a roll-out
// (one that rolled back while it ran the rejected binary) restarts onto the
// active one.
type Service struct {
	// Host is the supervisor. Required.
	Host Host
	// Events receives every step as an event of kind events.KindRollout.
	// Required.
	Events events.Emitter
	// Metrics counts the roll-outs that ended; optional.
	Metrics *metrics.Metrics
	// Log receives what goes wrong outside a roll-out's steps; default:
	// discard.
	Log logrus.FieldLogger
	// Self is the SHA-256 of the supervisor's own binary; "" when unknown.
	Self string
	// Root is the release store; default release.DefaultRoot.
	Root string
	// Unit is the supervisor's own unit; default SupervisorUnit.
	Unit string
	// RestartWait is how long to wait for the restart of the supervisor's
	// own unit before finishing the roll-out in this process; default
	// DefaultRestartWait.
	RestartWait time.Duration
	// ProbeInterval is the pause between health probes; default 250 ms.
	ProbeInterval time.Duration

	store   *release.Store
	persist *Store
	newOps  func(conn func(context.Context) (systemd.Units, error)) Ops // default: Systemd

	starts  chan startReq
	queries chan query
	updates chan *State
	ended   chan *State
}

type startReq struct {
	req   Request
	reply chan startReply
}

type startReply struct {
	st     *State
	status int
	err    error
}

type query struct {
	id    string
	reply chan queryReply
}

type queryReply struct {
	st      *State
	running bool
}

// Register checks the Service's fields and adds its routes and the roll-out
// line of the status to api. Call it once, before Run and before api serves.
func (s *Service) Register(api *statusapi.Server) error {
	if s.Host == nil || s.Events == nil {
		return errors.New("rollout: Service.Host and Service.Events are required")
	}
	if s.Root == "" {
		s.Root = release.DefaultRoot
	}
	if s.Unit == "" {
		s.Unit = systemd.SupervisorUnit
	}
	if s.RestartWait <= 0 {
		s.RestartWait = DefaultRestartWait
	}
	if s.Log == nil {
		l := logrus.New()
		l.SetOutput(discardWriter{})
		s.Log = l
	}
	s.store = release.NewStore(s.Root)
	s.persist = NewStore(s.store)
	if s.newOps == nil {
		s.newOps = func(conn func(context.Context) (systemd.Units, error)) Ops {
			return &Systemd{Conn: conn, Supervisor: s.Unit}
		}
	}
	s.starts, s.queries = make(chan startReq), make(chan query)
	s.updates, s.ended = make(chan *State), make(chan *State)
	api.Handle("POST /v1/rollout", http.HandlerFunc(s.handleStart))
	api.Handle("GET /v1/rollout", http.HandlerFunc(s.handleGet))
	api.Rollout = s.Status
	return nil
}

// Run owns the roll-out state until ctx ends, and then waits for a roll-out under way to stop (it is persisted
// where it stood; a rollback is carried through first).
func (s *Service) Run(ctx context.Context) {
	last, err := s.persist.Load()
	if err != nil {
		s.Log.WithError(err).Error("cannot read the last roll-out; starting without it")
	}
	running := false
	if last != nil && !last.Phase.Finished() {
		running = true
		go s.drive(ctx, last.clone(), nil)
	}
	for {
		select {
		case <-ctx.Done():
			if running {
				s.drain()
			}
			return
		case r := <-s.starts:
			if running {
				r.reply <- startReply{status: http.StatusConflict, err: fmt.Errorf("a roll-out is under way: %s; try again when it has ended", describe(last))}
				continue
			}
			st, status, err := s.plan(ctx, r.req)
			if err != nil {
				r.reply <- startReply{status: status, err: err}
				continue
			}
			unlock, err := s.persist.TryLock()
			if err != nil {
				status = http.StatusConflict
				if errors.Is(err, release.ErrLocked) {
					err = errors.New("another process is driving a roll-out (lodis upgrade or lodis rollback while the supervisor was down); try again when it has ended")
				} else {
					status = http.StatusInternalServerError
				}
				r.reply <- startReply{status: status, err: err}
				continue
			}
			if err := s.persist.Save(st); err != nil {
				unlock()
				r.reply <- startReply{status: http.StatusInternalServerError, err: err}
				continue
			}
			last, running = st, true
			r.reply <- startReply{st: st.clone(), status: http.StatusAccepted}
			go s.drive(ctx, st.clone(), unlock)
		case q := <-s.queries:
			if last != nil && (q.id == "" || q.id == last.ID) {
				q.reply <- queryReply{st: last.clone(), running: running}
			} else {
				q.reply <- queryReply{}
			}
		case st := <-s.updates:
			last = st
		case st := <-s.ended:
			last, running = st, false
		}
	}
}

// drain waits for the roll-out goroutine after ctx ended.
func (s *Service) drain() {
	for {
		select {
		case <-s.updates:
		case <-s.ended:
			return
		}
	}
}

// plan checks a request and makes the State of its roll-out.
func (s *Service) plan(ctx context.Context, r Request) (*State, int, error) {
	bad := func(format string, a ...any) (*State, int, error) {
		return nil, http.StatusBadRequest, fmt.Errorf(format, a...)
	}
	if r.Kind == "" {
		r.Kind = KindUpgrade
	}
	switch {
	case r.Kind != KindUpgrade && r.Kind != KindRollback:
		return bad("bad kind %q: want %s or %s", r.Kind, KindUpgrade, KindRollback)
	case !release.IsSHA256(r.SHA256):
		return bad("bad sha256 %q: want the 64 hex digits of a release in the store", r.SHA256)
	case r.CanarySoak < 0 || time.Duration(r.CanarySoak) > 10*time.Minute:
		return bad("bad canary_soak %s: want 0 (the default, %s) up to 10m", time.Duration(r.CanarySoak), DefaultCanarySoak)
	case r.HealthTimeout < 0 || time.Duration(r.HealthTimeout) > 10*time.Minute:
		return bad("bad health_timeout %s: want 0 (the default, %s) up to 10m", time.Duration(r.HealthTimeout), DefaultHealthTimeout)
	}
	to, err := s.store.Release(r.SHA256)
	switch {
	case err != nil:
		return nil, http.StatusInternalServerError, err
	case to != nil && to.Rejected != "":
		return nil, http.StatusUnprocessableEntity, fmt.Errorf("release %s was rejected: %s", buildinfo.ShortSHA(r.SHA256), to.Rejected)
	case !s.store.Has(r.SHA256):
		return bad("release %s is not in the store %s (lodis upgrade validates and imports a drop first)", buildinfo.ShortSHA(r.SHA256), s.store.Root)
	}
	active, _, err := s.store.Active()
	if err != nil {
		return nil, http.StatusInternalServerError, err
	}
	if active == r.SHA256 {
		return nil, http.StatusUnprocessableEntity, fmt.Errorf("release %s is active already", buildinfo.ShortSHA(r.SHA256))
	}
	if s.Host.Units(ctx) == nil {
		return nil, http.StatusServiceUnavailable, errors.New("the supervisor cannot reach systemd now; try again in a moment")
	}
	st := s.persist.Plan(r.Kind, active, r.SHA256, time.Now())
	st.CanarySoak, st.HealthTimeout = r.CanarySoak, r.HealthTimeout
	if st.CanarySoak == 0 {
		st.CanarySoak = Duration(DefaultCanarySoak)
	}
	if st.HealthTimeout == 0 {
		st.HealthTimeout = Duration(DefaultHealthTimeout)
	}
	return st, http.StatusAccepted, nil
}

// drive runs st to its end in this goroutine and reports the last State to
// Run. unlock is nil for a roll-out taken up at start: it then waits for
// systemd and for the roll-out lock first.
func (s *Service) drive(ctx context.Context, st *State, unlock func()) {
	final := st
	defer func() { s.ended <- final }()
	if unlock == nil {
		s.emit(st, "taking-up", "", fmt.Sprintf("roll-out %s was left unfinished (%s, %d of %d moved): taking it up", st.ID, st.Phase, len(st.Moved), len(st.Units)))
		var cur *State
		var err error
		unlock, cur, err = s.takeUp(ctx, st)
		if cur != nil {
			final = cur
		}
		if err != nil || unlock == nil {
			if err != nil && ctx.Err() == nil {
				s.Log.WithError(err).Error("cannot take up the unfinished roll-out")
			}
			return
		}
		st = cur
	}
	defer unlock()
	resume := s.Host.HoldWorkers(ctx, "roll-out "+st.ID)
	defer resume()
	ops := s.newOps(s.units)
	// Events are logged by the supervisor's event stream: the Runner's own
	// log would say everything twice.
	r := &Runner{
		Ops: ops, Releases: s.store, Persist: servicePersist{s}, SupervisorIsSelf: true,
		CanarySoak: time.Duration(st.CanarySoak), HealthTimeout: time.Duration(st.HealthTimeout),
		ProbeInterval: s.ProbeInterval, OnEvent: func(e Event) { s.emitAt(e.Time, st, e.Kind, e.Unit, e.Message) },
	}
	if st.Phase == PhaseSupervisor && s.Self != "" && s.Self != st.To {
		s.emit(st, "supervisor-not-moved", "", fmt.Sprintf("the supervisor runs %s, not the new release %s: is its ExecStart= /var/lib/lodis/current?", buildinfo.ShortSHA(s.Self), buildinfo.ShortSHA(st.To)))
	}
	err := r.Run(ctx, st)
	if errors.Is(err, ErrHandedToNextSupervisor) {
		select {
		case <-ctx.Done():
			return // being restarted: the next supervisor finishes
		case <-time.After(s.RestartWait):
			s.emit(st, "supervisor-restart-failed", "", fmt.Sprintf("the supervisor was not restarted within %s: finishing the roll-out in this process", s.RestartWait))
			err = r.Run(ctx, st)
		}
	}
	if st.Phase.Finished() && s.Metrics != nil {
		s.Metrics.CountRollout(st.Kind, string(st.Phase))
	}
	if (st.Phase == PhaseRolledBack || st.Phase == PhaseFailed) && ctx.Err() == nil {
		s.moveSelf(ctx, st, ops)
	}
	if err != nil && !st.Phase.Finished() && ctx.Err() == nil {
		s.Log.WithError(err).Error("roll-out stopped")
	}
}

// takeUp waits until systemd is reachable and no other process drives a
// roll-out, then reloads the persisted State: nil when it has been finished
// meanwhile.
func (s *Service) takeUp(ctx context.Context, st *State) (func(), *State, error) {
	for s.Host.Units(ctx) == nil {
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	unlock, err := s.persist.Lock(ctx)
	if err != nil {
		return nil, nil, err
	}
	cur, err := s.persist.Load()
	if err != nil || cur == nil || cur.Phase.Finished() {
		unlock()
		return nil, cur, err
	}
	return unlock, cur, nil
}

// moveSelf restarts the supervisor onto the active release when it runs
// another binary: after a rollback that a supervisor on the rejected release
// carried out (it was restarted, through current, while current pointed at
// the new release).
func (s *Service) moveSelf(ctx context.Context, st *State, ops Ops) {
	active, _, err := s.store.Active()
	if err != nil || s.Self == "" || active == s.Self {
		return
	}
	s.emit(st, "supervisor-restart", "", fmt.Sprintf("the supervisor runs %s, the active release is %s: restarting onto it", buildinfo.ShortSHA(s.Self), buildinfo.ShortSHA(active)))
	if err := ops.RestartSupervisor(ctx, false); err != nil {
		s.emit(st, "supervisor-restart-failed", "", err.Error())
	}
}

// Status returns the roll-out line of the supervisor's status: the roll-out
// under way, or the last one; nil when there is none.
func (s *Service) Status(ctx context.Context) *statusapi.RolloutStatus {
	st, running, ok := s.get(ctx, "")
	if !ok || st == nil {
		return nil
	}
	return &statusapi.RolloutStatus{
		ID: st.ID, Kind: st.Kind, From: st.From, To: st.To, FromVersion: st.FromVersion, ToVersion: st.ToVersion,
		Phase: string(st.Phase), Running: running, Moved: len(st.Moved), Total: len(st.Units), Current: st.Current,
		Reason: st.Reason, Started: st.Started, Finished: st.Finished,
	}
}

// Start asks Run for a roll-out; the status is an HTTP status code.
func (s *Service) Start(ctx context.Context, r Request) (*State, int, error) {
	reply := make(chan startReply, 1)
	select {
	case s.starts <- startReq{r, reply}:
	case <-ctx.Done():
		return nil, http.StatusServiceUnavailable, errors.New("the supervisor is busy or stopping")
	}
	a := <-reply
	return a.st, a.status, a.err
}

// get returns the roll-out id ("" the latest) and whether it runs; ok is
// false when Run did not answer before ctx ended.
func (s *Service) get(ctx context.Context, id string) (*State, bool, bool) {
	reply := make(chan queryReply, 1)
	select {
	case s.queries <- query{id, reply}:
	case <-ctx.Done():
		return nil, false, false
	}
	a := <-reply
	return a.st, a.running, true
}

func (s *Service) handleStart(w http.ResponseWriter, r *http.Request) {
	var req Request
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		http.Error(w, "bad roll-out request: "+err.Error(), http.StatusBadRequest)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	st, status, err := s.Start(ctx, req)
	if err != nil {
		http.Error(w, err.Error(), status)
		return
	}
	statusapi.WriteJSON(w, status, st)
}

func (s *Service) handleGet(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	id := r.URL.Query().Get("id")
	st, _, ok := s.get(ctx, id)
	switch {
	case !ok:
		http.Error(w, "supervisor busy or stopping", http.StatusServiceUnavailable)
	case st == nil && id != "":
		http.Error(w, fmt.Sprintf("no roll-out %q: it is neither under way nor the last one", id), http.StatusNotFound)
	default:
		statusapi.WriteJSON(w, http.StatusOK, st)
	}
}

// emit reports a step of the service itself (not of the Runner) as a
// supervisor event.
func (s *Service) emit(st *State, kind, unit, msg string) { s.emitAt(time.Time{}, st, kind, unit, msg) }

// emitAt turns a roll-out step into a supervisor event: Action is the step,
// From and To the releases (12 digits), Instance the port of Unit.
func (s *Service) emitAt(t time.Time, st *State, kind, unit, msg string) {
	e := events.Event{Time: t, Kind: events.KindRollout, Unit: unit, Action: kind, Result: "done",
		From: buildinfo.ShortSHA(st.From), To: buildinfo.ShortSHA(st.To), Message: msg}
	if unit != "" {
		e.Instance = systemd.PortOf(unit)
	}
	if failedStep(kind) {
		e.Result = "failed"
	}
	s.Events.Emit(e)
}

// failedStep reports the roll-out steps that mean something went wrong.
func failedStep(kind string) bool {
	return kind == "rollback-started" || strings.HasSuffix(kind, "-failed") || kind == "supervisor-not-moved"
}

// servicePersist saves a State and hands a copy to Run for the status.
type servicePersist struct{ s *Service }

func (p servicePersist) Save(st *State) error {
	err := p.s.persist.Save(st)
	p.s.updates <- st.clone()
	return err
}

// units is the supervisor's connection of the moment: a roll-out goes on
// over a new connection after a reconnection.
func (s *Service) units(ctx context.Context) (systemd.Units, error) {
	if u := s.Host.Units(ctx); u != nil {
		return u, nil
	}
	return nil, errors.New("systemd unreachable: the supervisor is reconnecting")
}

// describe is a one-line account of a roll-out.
func describe(st *State) string {
	if st == nil {
		return "unknown"
	}
	return fmt.Sprintf("%s (%s to %s, %s, %d of %d moved)", st.ID, st.Kind, label(st.ToVersion, st.To), st.Phase, len(st.Moved), len(st.Units))
}

// clone is a deep copy of st.
func (st *State) clone() *State {
	c := *st
	c.Units = slices.Clone(st.Units)
	c.Moved = slices.Clone(st.Moved)
	c.Events = slices.Clone(st.Events)
	return &c
}
