package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"syscall"
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
// release SHA256, which must be in the store already.
type Request struct {
	SHA256 string `json:"sha256"`
}

// RequestUnit is the root unit that carries out a roll-out request for
// release sha: lodis-rollout@SHA.service runs `lodis rollback --to SHA`.
func RequestUnit(sha string) string { return "lodis-rollout@" + sha + ".service" }

// Host is what a Service needs of the supervisor; *supervisor.Supervisor
// implements it.
type Host interface {
	// Units is the supervisor's live D-Bus connection, nil while systemd is
	// unreachable.
	Units(ctx context.Context) systemd.Units
}

// Service is the supervisor's side of roll-outs, which root drives (`lodis
// upgrade`, `lodis rollback`); it changes nothing in the store, which is
// root's. It tells the status API about the roll-out under way or the last
// one (GET /v1/rollout, the roll-out line of GET /v1/instances), read from
// rollout.json; it relays each step to the event stream (kind
// events.KindRollout); it takes roll-out requests from root or the admin
// group (POST /v1/rollout), which it hands on as the start of root's
// RequestUnit, where root checks them again; and when it starts and finds a
// roll-out left unfinished, it starts lodis-upgrade.service so that root
// takes it up. Set its fields, Register it, then Run it beside the
// supervisor.
type Service struct {
	// Host is the supervisor. Required.
	Host Host
	// Events receives every step of every roll-out. Required.
	Events events.Emitter
	// Metrics counts the roll-outs that ended, tells whether one is under
	// way, and shows the store's releases and rejections; optional.
	Metrics *metrics.Metrics
	// Log receives what goes wrong; default: discard.
	Log logrus.FieldLogger
	// Root is the release store; default release.DefaultRoot.
	Root string
	// PublicKey is the release signing key's path; when the file exists a
	// requested release must carry a valid signature. Default
	// release.DefaultPublicKey.
	PublicKey string
	// Poll is how often rollout.json is read; default 500 ms.
	Poll time.Duration

	store *Store
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
	if s.PublicKey == "" {
		s.PublicKey = release.DefaultPublicKey
	}
	if s.Poll <= 0 {
		s.Poll = 500 * time.Millisecond
	}
	if s.Log == nil {
		l := logrus.New()
		l.SetOutput(discardWriter{})
		s.Log = l
	}
	s.store = NewStore(release.NewStore(s.Root))
	api.Handle("POST /v1/rollout", http.HandlerFunc(s.handleRequest))
	api.Handle("GET /v1/rollout", http.HandlerFunc(s.handleGet))
	api.Rollout = s.Status
	return nil
}

// Run follows rollout.json until ctx ends, relaying each new step as an
// event and counting each roll-out that ends (and the release store, for
// the metrics, every 2 s at most). A roll-out found unfinished
// whose driver is gone (killed, or the machine rebooted) has root take it up
// (lodis-upgrade.service).
func (s *Service) Run(ctx context.Context) {
	last, _ := s.store.Load()
	if last != nil && !last.Phase.Finished() && driverGone(last.DriverPID) {
		s.takeUp(ctx, last)
	}
	seen, orphaned := map[string]int{}, map[string]int{}
	if last != nil && last.Phase.Finished() {
		// Told before this supervisor ran. The steps of a roll-out under
		// way are relayed from its start: repeating a few is harmless,
		// losing its first ones is not.
		seen[last.ID] = len(last.Events)
	}
	rw := &releaseWatch{store: s.store.Releases, metrics: s.Metrics}
	rw.poll()
	s.observeRollout(last, false)
	t := time.NewTicker(s.Poll)
	defer t.Stop()
	lastRead := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if time.Since(lastRead) >= 2*time.Second {
			rw.poll()
			lastRead = time.Now()
		}
		st, err := s.store.Load()
		if err != nil || st == nil {
			continue
		}
		if !st.Phase.Finished() && driverGone(st.DriverPID) && time.Since(st.Updated) > 2*time.Second {
			if orphaned[st.ID]++; orphaned[st.ID] == 2 { // seen twice: not a driver starting up
				s.takeUp(ctx, st)
			}
		}
		n, known := seen[st.ID]
		if n > len(st.Events) {
			n = 0 // trimmed: repeating is harmless
		}
		for _, e := range st.Events[n:] {
			s.emit(st, e)
		}
		seen[st.ID] = len(st.Events)
		s.observeRollout(st, st.Phase.Finished() && (!known || n < len(st.Events)) && slices.ContainsFunc(st.Events[n:], isEnd))
	}
}

// isEnd reports the events that end a roll-out.
func isEnd(e Event) bool {
	return e.Kind == "done" || e.Kind == "rolled-back" || e.Kind == "rollback-failed"
}

// driverGone reports whether the process that drove a roll-out is gone
// (0: none recorded, as in a State written by an older lodis).
func driverGone(pid int) bool {
	if pid <= 0 {
		return true
	}
	err := syscall.Kill(pid, 0)
	return errors.Is(err, syscall.ESRCH) // EPERM: it exists, and is root's
}

// takeUp starts lodis-upgrade.service, which resumes an unfinished
// roll-out as root; a run already under way is joined, not doubled.
func (s *Service) takeUp(ctx context.Context, st *State) {
	for i := 0; i < 40 && ctx.Err() == nil; i++ {
		if u := s.Host.Units(ctx); u != nil {
			s.emitStep(st, "taking-up", "", fmt.Sprintf("roll-out %s was left unfinished (%s, %d of %d moved): starting %s to take it up",
				st.ID, st.Phase, len(st.Moved), len(st.Units), UpgradeUnit))
			if err := u.StartUnit(ctx, UpgradeUnit); err != nil {
				s.Log.WithError(err).Error("cannot have the unfinished roll-out taken up")
			}
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// UpgradeUnit runs `lodis upgrade` as root.
const UpgradeUnit = "lodis-upgrade.service"

// Status returns the roll-out line of the supervisor's status: the roll-out
// under way, or the last one; nil when there is none.
func (s *Service) Status(context.Context) *statusapi.RolloutStatus {
	st, err := s.store.Load()
	if err != nil || st == nil {
		return nil
	}
	return &statusapi.RolloutStatus{
		ID: st.ID, Kind: st.Kind, From: st.From, To: st.To, FromVersion: st.FromVersion, ToVersion: st.ToVersion,
		Phase: string(st.Phase), Running: !st.Phase.Finished(), Moved: len(st.Moved), Total: len(st.Units), Current: st.Current,
		Reason: st.Reason, Started: st.Started, Finished: st.Finished,
	}
}

// State returns the roll-out under way, or the last one, with its steps;
// nil when there is none.
func (s *Service) State() (*State, error) { return s.store.Load() }

func (s *Service) handleGet(w http.ResponseWriter, r *http.Request) {
	st, err := s.store.Load()
	id := r.URL.Query().Get("id")
	switch {
	case err != nil:
		http.Error(w, err.Error(), http.StatusInternalServerError)
	case id != "" && (st == nil || st.ID != id):
		http.Error(w, fmt.Sprintf("no roll-out %q: it is neither under way nor the last one", id), http.StatusNotFound)
	default:
		statusapi.WriteJSON(w, http.StatusOK, st)
	}
}

// handleRequest takes a roll-out request from root or the admin group.
func (s *Service) handleRequest(w http.ResponseWriter, r *http.Request) {
	if who, ok := statusapi.Admin(r); !ok {
		http.Error(w, "roll-outs are for root or the admin group; "+who+" may only read", http.StatusForbidden)
		return
	}
	var req Request
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		http.Error(w, "bad roll-out request: "+err.Error(), http.StatusBadRequest)
		return
	}
	if status, err := s.check(req.SHA256); err != nil {
		http.Error(w, err.Error(), status)
		return
	}
	if cur, _ := s.store.Load(); cur != nil && !cur.Phase.Finished() {
		http.Error(w, "a roll-out is under way: "+describe(cur)+"; try again when it has ended", http.StatusConflict)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	u := s.Host.Units(ctx)
	if u == nil {
		http.Error(w, "the supervisor cannot reach systemd now; try again in a moment", http.StatusServiceUnavailable)
		return
	}
	unit := RequestUnit(req.SHA256)
	// Queued, not waited for: root's unit runs the whole roll-out, and
	// tells how it went in rollout.json.
	if err := u.EnqueueStartUnit(ctx, unit); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	statusapi.WriteJSON(w, http.StatusAccepted, map[string]string{"unit": unit, "sha256": req.SHA256,
		"message": "requested: " + unit + " rolls it out; follow it with GET /v1/rollout"})
}

// check applies the policy in force now to a requested release: a release
// in the store, not rejected, not active, and signed when a key is
// configured. status is the HTTP status of a refusal.
func (s *Service) check(sha string) (status int, err error) {
	rel := s.store.Releases
	if !release.IsSHA256(sha) {
		return http.StatusBadRequest, fmt.Errorf("bad sha256 %q: want the 64 hex digits of a release in the store", clip(sha))
	}
	if r, err := rel.Release(sha); err != nil {
		return http.StatusInternalServerError, err
	} else if r != nil && r.Rejected != "" {
		return http.StatusUnprocessableEntity, fmt.Errorf("release %s was rejected: %s", buildinfo.ShortSHA(sha), r.Rejected)
	}
	if !rel.Has(sha) {
		return http.StatusBadRequest, fmt.Errorf("release %s is not in the store %s", buildinfo.ShortSHA(sha), rel.Root)
	}
	if active, _, err := rel.Active(); err == nil && active == sha {
		return http.StatusUnprocessableEntity, fmt.Errorf("release %s is active already", buildinfo.ShortSHA(sha))
	}
	if err := rel.CheckPolicy(sha, s.PublicKey); err != nil {
		return http.StatusUnprocessableEntity, err
	}
	return 0, nil
}

// emit relays a roll-out step as an event: Action is the step, From and To
// the releases (12 digits), Instance the port of the step's unit.
func (s *Service) emit(st *State, e Event) {
	ev := events.Event{Time: e.Time, Kind: events.KindRollout, Unit: e.Unit, Action: e.Kind, Result: "done",
		From: buildinfo.ShortSHA(st.From), To: buildinfo.ShortSHA(st.To), Message: e.Message}
	if e.Unit != "" {
		ev.Instance = systemd.PortOf(e.Unit)
	}
	if failedStep(e.Kind) {
		ev.Result = "failed"
	}
	s.Events.Emit(ev)
}

// emitStep reports a step of the service itself.
func (s *Service) emitStep(st *State, kind, unit, msg string) {
	s.emit(st, Event{Time: time.Now().UTC(), Rollout: st.ID, Kind: kind, Unit: unit, Message: msg})
}

// failedStep reports the roll-out steps that mean something went wrong.
func failedStep(kind string) bool {
	return kind == "rollback-started" || kind == "rolled-back" || len(kind) > 7 && kind[len(kind)-7:] == "-failed"
}

// describe is a one-line account of a roll-out.
func describe(st *State) string {
	if st == nil {
		return "unknown"
	}
	return fmt.Sprintf("%s (%s to %s, %s, %d of %d moved)", st.ID, st.Kind, label(st.ToVersion, st.To), st.Phase, len(st.Moved), len(st.Units))
}

func clip(s string) string {
	if len(s) > 70 {
		return s[:70] + "…"
	}
	return s
}
