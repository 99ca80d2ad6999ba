// Package rollout moves running lodis workers from one release to another,
// one at a time, and rolls back on the first sign of trouble.
//
// A roll-out, in order:
//
//  1. Flip: /var/lib/lodis/current is pointed at the new release (one atomic
//     rename). From now on every activation, of any port, runs the new binary;
//     ports whose worker is idle need nothing more.
//  2. Plan: the worker units running now (lodis@PORT.service), in port order.
//     When none runs, the first listening socket is the canary: probing it
//     starts a worker on the new release.
//  3. Canary: the first unit is restarted (systemd try-restart: stop with
//     drain, start, wait for READY=1) and must report the new SHA-256 on
//     /__/health within HealthTimeout. It is then watched for CanarySoak
//     (default 5 s): every answer must be healthy, from the new release, and
//     from the same process (a restart during the soak is a crash).
//  4. The rest, one at a time: restart, then the new SHA-256 on /__/health
//     before the next one goes. A last sweep restarts any running worker still
//     on another release.
//  5. The supervisor unit, last (see Runner.SupervisorIsSelf).
//
// Any failure before the end — a restart job that fails, a health check that
// fails or times out, a canary that restarts — rolls back: current is flipped
// back, every instance already moved (and the one being moved) is restarted
// and must report the old release again, the new release is marked rejected
// with the reason. Every step is an Event.
//
// Progress is persisted (Persister) after every step, so a roll-out whose
// driver was killed is taken up by the next one (Runner.Run on the loaded
// State): before the canary passed its soak it rolls back, after it carries
// on; it is never left half done.
package rollout

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/lodis/lodis/internal/buildinfo"
	"github.com/lodis/lodis/internal/health"
)

// Phase is where a roll-out stands.
type Phase string

// Phases, in the order a roll-out goes through them.
const (
	PhasePending     Phase = "pending"      // planned, nothing changed yet
	PhaseRolling     Phase = "rolling"      // current flipped; moving workers one by one
	PhaseSupervisor  Phase = "supervisor"   // workers moved; restarting the supervisor
	PhaseDone        Phase = "done"         // every running worker is on the new release
	PhaseRollingBack Phase = "rolling-back" // current flipped back; returning moved workers
	PhaseRolledBack  Phase = "rolled-back"  // every moved worker is back on the old release
	PhaseFailed      Phase = "failed"       // the rollback itself could not return every worker: needs an operator
)

// Finished reports whether p is a terminal phase.
func (p Phase) Finished() bool {
	return p == PhaseDone || p == PhaseRolledBack || p == PhaseFailed
}

// Kinds of roll-out.
const (
	KindUpgrade  = "upgrade"  // to a newly dropped release
	KindRollback = "rollback" // back to the previous release, by hand
)

// State is one roll-out, as persisted after every step.
type State struct {
	ID           string    `json:"id"`
	Kind         string    `json:"kind"`
	From         string    `json:"from"` // sha256 of the release moved away from
	To           string    `json:"to"`   // sha256 of the release moved to
	FromVersion  string    `json:"from_version,omitempty"`
	ToVersion    string    `json:"to_version,omitempty"`
	Phase        Phase     `json:"phase"`
	Units        []string  `json:"units"`             // planned worker units, canary first
	Moved        []string  `json:"moved"`             // units verified on To
	Current      string    `json:"current,omitempty"` // unit being moved now
	CanaryPassed bool      `json:"canary_passed"`
	Reason       string    `json:"reason,omitempty"` // why it rolled back or failed
	Started      time.Time `json:"started"`
	Updated      time.Time `json:"updated"`
	Finished     time.Time `json:"finished,omitzero"`
	// CanarySoak and HealthTimeout are the roll-out's timing as requested
	// of the supervisor (Service), kept for a supervisor that takes it up.
	CanarySoak    Duration `json:"canary_soak,omitempty"`
	HealthTimeout Duration `json:"health_timeout,omitempty"`
	Events        []Event  `json:"events"`
}

// NewState plans a roll-out of kind from release from to release to.
func NewState(kind, from, to string, now time.Time) *State {
	return &State{
		ID:   now.UTC().Format("20060102T150405Z") + "-" + buildinfo.ShortSHA(to),
		Kind: kind, From: from, To: to, Phase: PhasePending,
		Units: []string{}, Moved: []string{}, Started: now.UTC(), Updated: now.UTC(), Events: []Event{},
	}
}

// Event is one step of a roll-out.
type Event struct {
	Time    time.Time `json:"time"`
	Rollout string    `json:"rollout"`
	Kind    string    `json:"kind"`
	Unit    string    `json:"unit,omitempty"`
	Message string    `json:"message"`
}

// maxEvents bounds the events kept in a State.
const maxEvents = 200

// Ops is how a roll-out acts on the machine; Systemd is the real one.
type Ops interface {
	// Running lists the worker units that run now, in port order.
	Running(ctx context.Context) ([]string, error)
	// Listening lists the worker units whose socket is listening, in port order.
	Listening(ctx context.Context) ([]string, error)
	// Restart restarts unit if it runs (try-restart: an idle unit stays
	// idle) and waits for the job; an error when the job did not succeed.
	Restart(ctx context.Context, unit string) error
	// Health fetches the health report of the port unit serves. An answer
	// other than 200 is an error; a *health.StatusError when the worker
	// answered.
	Health(ctx context.Context, unit string) (health.Report, error)
	// RestartSupervisor restarts the supervisor if it runs. wait=false only
	// queues the job (the caller is the supervisor and will be stopped).
	RestartSupervisor(ctx context.Context, wait bool) error
}

// Releases is the release store as a roll-out needs it (release.Store).
type Releases interface {
	Activate(sha string) error
	SetPrevious(sha string) error
	MarkRejected(sha, reason string) error
}

// Persister keeps a roll-out's State across crashes (Store).
type Persister interface {
	Save(*State) error
}

// Runner drives roll-outs. One goroutine calls Run at a time; the Runner
// keeps no state of its own between calls.
type Runner struct {
	Ops      Ops
	Releases Releases
	Persist  Persister
	// CanarySoak is how long the canary is watched; default 5 s.
	CanarySoak time.Duration
	// ProbeInterval is the pause between health probes; default 250 ms.
	ProbeInterval time.Duration
	// HealthTimeout is how long a restarted worker has to report the new
	// release; default 15 s.
	HealthTimeout time.Duration
	// SupervisorIsSelf says the Runner runs inside the supervisor: the
	// supervisor's restart is queued without waiting, and the next supervisor
	// finishes the roll-out (Run on the persisted State in PhaseSupervisor).
	SupervisorIsSelf bool
	// OnEvent, if set, receives every event as it happens.
	OnEvent func(Event)
	// Log receives every event too; default: discard.
	Log logrus.FieldLogger
	// Now tells the time; default time.Now.
	Now func() time.Time
}

// RolledBackError is returned by Run when the roll-out was rolled back.
type RolledBackError struct {
	Reason string
	Failed bool // the rollback did not return every worker (PhaseFailed)
}

func (e *RolledBackError) Error() string {
	if e.Failed {
		return "rollback incomplete: " + e.Reason
	}
	return "rolled back: " + e.Reason
}

// ErrHandedToNextSupervisor is returned by Run when SupervisorIsSelf and the
// supervisor's own restart was queued: the next supervisor finishes.
var ErrHandedToNextSupervisor = errors.New("supervisor restart queued; the next supervisor finishes the roll-out")

func (r *Runner) defaults() {
	if r.CanarySoak <= 0 {
		r.CanarySoak = 5 * time.Second
	}
	if r.ProbeInterval <= 0 {
		r.ProbeInterval = 250 * time.Millisecond
	}
	if r.HealthTimeout <= 0 {
		r.HealthTimeout = 15 * time.Second
	}
	if r.Now == nil {
		r.Now = time.Now
	}
	if r.Log == nil {
		l := logrus.New()
		l.SetOutput(discardWriter{})
		r.Log = l
	}
}

// Run drives st to a terminal phase and returns nil when it is done, a
// *RolledBackError when it was rolled back, ErrHandedToNextSupervisor (see
// SupervisorIsSelf), or the context's error when ctx ended first (st is then
// persisted where it stood and a later Run takes it up).
//
// A State in PhasePending starts afresh. A State found in another unfinished
// phase is a roll-out whose driver stopped: Run resumes it as the package
// documentation says.
func (r *Runner) Run(ctx context.Context, st *State) error {
	r.defaults()
	switch st.Phase {
	case PhaseDone:
		return nil
	case PhaseRolledBack, PhaseFailed:
		return st.Err()
	case PhasePending:
		return r.forward(ctx, st, false)
	case PhaseRolling:
		r.event(st, "resumed", "", "taking up an interrupted roll-out (%d of %d moved, canary passed: %v)", len(st.Moved), len(st.Units), st.CanaryPassed)
		if !st.CanaryPassed {
			return r.rollback(ctx, st, "interrupted before the canary passed its soak")
		}
		return r.forward(ctx, st, true)
	case PhaseSupervisor:
		if r.SupervisorIsSelf {
			r.event(st, "resumed", "", "the supervisor runs again after its restart: finishing the roll-out")
		} else {
			r.event(st, "resumed", "", "taking up an interrupted roll-out at the supervisor's restart")
		}
		return r.finish(st)
	case PhaseRollingBack:
		r.event(st, "resumed", "", "taking up an interrupted rollback")
		return r.rollback(ctx, st, st.Reason)
	}
	return fmt.Errorf("roll-out %s: unknown phase %q", st.ID, st.Phase)
}

func (r *Runner) forward(ctx context.Context, st *State, resumed bool) error {
	if !resumed {
		r.event(st, "started", "", "%s %s → %s", st.Kind, label(st.FromVersion, st.From), label(st.ToVersion, st.To))
	}
	// Flipping again on resume is harmless and covers a crash between the
	// flip and its record.
	if err := r.Releases.Activate(st.To); err != nil {
		return r.rollback(ctx, st, "flip current: "+err.Error())
	}
	if !resumed {
		running, err := r.Ops.Running(ctx)
		if err != nil {
			return r.rollback(ctx, st, "list running workers: "+err.Error())
		}
		st.Units = running
		if len(running) == 0 {
			listening, err := r.Ops.Listening(ctx)
			if err != nil {
				return r.rollback(ctx, st, "list listening sockets: "+err.Error())
			}
			if len(listening) > 0 {
				st.Units = listening[:1] // a canary, activated by its probe
			}
		}
		st.Phase = PhaseRolling
		r.event(st, "flipped", "", "current → %s; %d running worker(s) to move: %s", buildinfo.ShortSHA(st.To), len(st.Units), strings.Join(st.Units, " "))
		if err := r.save(st); err != nil {
			return err
		}
	} else {
		// Whatever was moved before the interruption must still be there.
		for _, u := range st.Moved {
			if h, err := r.Ops.Health(ctx, u); err != nil || h.SHA256 != st.To {
				st.Moved = slices.DeleteFunc(st.Moved, func(m string) bool { return m == u })
			}
		}
	}
	for i, u := range st.Units {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if slices.Contains(st.Moved, u) {
			continue
		}
		if err := r.move(ctx, st, u); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return r.rollback(ctx, st, err.Error())
		}
		if i == 0 && !st.CanaryPassed {
			if err := r.soak(ctx, st, u); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return r.rollback(ctx, st, err.Error())
			}
		}
	}
	if !st.CanaryPassed {
		// No worker at all: nothing to watch; the flip alone is the roll-out.
		st.CanaryPassed = true
	}
	// A worker that started while the plan was made, or was missed: sweep.
	running, err := r.Ops.Running(ctx)
	if err != nil {
		return r.rollback(ctx, st, "list running workers: "+err.Error())
	}
	for _, u := range running {
		if slices.Contains(st.Moved, u) {
			continue
		}
		if h, err := r.Ops.Health(ctx, u); err == nil && h.SHA256 == st.To {
			continue
		}
		st.Units = append(st.Units, u)
		if err := r.move(ctx, st, u); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return r.rollback(ctx, st, err.Error())
		}
	}
	st.Phase = PhaseSupervisor
	r.event(st, "workers-moved", "", "%d worker(s) on %s", len(st.Moved), buildinfo.ShortSHA(st.To))
	if err := r.save(st); err != nil {
		return err
	}
	if r.SupervisorIsSelf {
		r.event(st, "supervisor-restart", "", "restarting the supervisor onto the new release; it finishes the roll-out")
		r.save(st)
		if err := r.Ops.RestartSupervisor(ctx, false); err != nil {
			if ctx.Err() != nil {
				// Being stopped already: the restart is under way.
				return ErrHandedToNextSupervisor
			}
			r.event(st, "supervisor-restart-failed", "", "%v", err)
			return r.finish(st)
		}
		return ErrHandedToNextSupervisor
	}
	if err := r.Ops.RestartSupervisor(ctx, true); err != nil {
		// The workers are fine; a supervisor that will not restart is the
		// supervisor's problem, not a reason to roll the workers back.
		r.event(st, "supervisor-restart-failed", "", "%v", err)
	}
	return r.finish(st)
}

func (r *Runner) finish(st *State) error {
	if err := r.Releases.SetPrevious(st.From); err != nil {
		r.event(st, "bookkeeping-failed", "", "record previous release: %v", err)
	}
	st.Phase = PhaseDone
	st.Current = ""
	st.Finished = r.Now().UTC()
	r.event(st, "done", "", "%s done: every running worker is on %s (%d moved) in %s",
		st.Kind, label(st.ToVersion, st.To), len(st.Moved), st.Finished.Sub(st.Started).Round(time.Millisecond))
	return r.save(st)
}

// move restarts one unit onto st.To and waits for it to say so.
func (r *Runner) move(ctx context.Context, st *State, u string) error {
	st.Current = u
	if err := r.save(st); err != nil {
		return err
	}
	if h, err := r.Ops.Health(ctx, u); err == nil && h.SHA256 == st.To {
		r.event(st, "already-moved", u, "already on %s (pid %d)", buildinfo.ShortSHA(st.To), h.PID)
	} else {
		r.event(st, "restarting", u, "restarting")
		if err := r.Ops.Restart(ctx, u); err != nil {
			return fmt.Errorf("restart %s: %w", u, err)
		}
		if _, err := r.waitRelease(ctx, u, st.To); err != nil {
			return err
		}
	}
	st.Moved = append(st.Moved, u)
	st.Current = ""
	r.event(st, "moved", u, "on %s (%d of %d)", buildinfo.ShortSHA(st.To), len(st.Moved), len(st.Units))
	return r.save(st)
}

// waitRelease probes u until it reports sha, for at most HealthTimeout.
// Three answers in a row that are definite but wrong (not healthy, or another
// release) fail at once; errors reaching the worker are retried.
func (r *Runner) waitRelease(ctx context.Context, u, sha string) (health.Report, error) {
	deadline := r.Now().Add(r.HealthTimeout)
	var last error
	wrong := 0
	for {
		h, err := r.Ops.Health(ctx, u)
		switch {
		case err == nil && h.Status == "ok" && h.SHA256 == sha:
			return h, nil
		case err == nil:
			wrong++
			last = fmt.Errorf("reports status %q, release %s", h.Status, buildinfo.ShortSHA(h.SHA256))
		default:
			var he *health.StatusError
			if errors.As(err, &he) {
				wrong++
			} else {
				wrong = 0
			}
			last = err
		}
		if wrong >= 3 {
			return h, fmt.Errorf("health check of %s failed: %v", u, last)
		}
		if !r.Now().Before(deadline) {
			return h, fmt.Errorf("health check of %s: no answer from %s within %s: %v", u, buildinfo.ShortSHA(sha), r.HealthTimeout, last)
		}
		if err := r.sleep(ctx, r.ProbeInterval); err != nil {
			return h, err
		}
	}
}

// soak watches the canary for CanarySoak.
func (r *Runner) soak(ctx context.Context, st *State, u string) error {
	r.event(st, "canary-soak", u, "watching the canary for %s", r.CanarySoak)
	first, err := r.Ops.Health(ctx, u)
	if err != nil {
		return fmt.Errorf("canary %s: %w", u, err)
	}
	end := r.Now().Add(r.CanarySoak)
	fails := 0
	for r.Now().Before(end) {
		if err := r.sleep(ctx, r.ProbeInterval); err != nil {
			return err
		}
		h, err := r.Ops.Health(ctx, u)
		switch {
		case err != nil:
			fails++
			if fails >= 2 {
				return fmt.Errorf("canary %s failed its health check during the soak: %w", u, err)
			}
			continue
		case h.Status != "ok" || h.SHA256 != st.To:
			return fmt.Errorf("canary %s reports status %q, release %s during the soak", u, h.Status, buildinfo.ShortSHA(h.SHA256))
		case h.PID != first.PID:
			return fmt.Errorf("canary %s restarted during the soak (pid %d → %d)", u, first.PID, h.PID)
		}
		fails = 0
	}
	st.CanaryPassed = true
	r.event(st, "canary-passed", u, "healthy on %s for %s", buildinfo.ShortSHA(st.To), r.CanarySoak)
	return r.save(st)
}

// rollback returns every moved worker to st.From.
func (r *Runner) rollback(ctx context.Context, st *State, reason string) error {
	if st.Phase != PhaseRollingBack {
		st.Phase = PhaseRollingBack
		st.Reason = reason
		r.event(st, "rollback-started", st.Current, "rolling back to %s: %s", label(st.FromVersion, st.From), reason)
		r.save(st)
	}
	// The rollback must finish even when the caller's context has ended: a
	// half rolled-back machine is what this package exists to prevent.
	ctx = context.WithoutCancel(ctx)
	var problems []string
	if err := r.Releases.Activate(st.From); err != nil {
		problems = append(problems, "flip back: "+err.Error())
	}
	back := slices.Clone(st.Moved)
	if st.Current != "" && !slices.Contains(back, st.Current) {
		back = append(back, st.Current)
	}
	slices.Reverse(back)
	for _, u := range back {
		if h, err := r.Ops.Health(ctx, u); err == nil && h.SHA256 == st.From {
			r.event(st, "rollback-moved", u, "already on %s", buildinfo.ShortSHA(st.From))
		} else {
			r.event(st, "rollback-restarting", u, "restarting onto %s", buildinfo.ShortSHA(st.From))
			if err := r.Ops.Restart(ctx, u); err != nil {
				problems = append(problems, fmt.Sprintf("restart %s: %v", u, err))
			}
			if _, err := r.waitRelease(ctx, u, st.From); err != nil {
				problems = append(problems, err.Error())
				continue
			}
			r.event(st, "rollback-moved", u, "back on %s", buildinfo.ShortSHA(st.From))
		}
		st.Moved = slices.DeleteFunc(st.Moved, func(m string) bool { return m == u })
		if st.Current == u {
			st.Current = ""
		}
		r.save(st)
	}
	if err := r.Releases.MarkRejected(st.To, reason); err != nil {
		problems = append(problems, "mark rejected: "+err.Error())
	}
	st.Finished = r.Now().UTC()
	if len(problems) > 0 {
		st.Phase = PhaseFailed
		st.Reason = reason + "; rollback problems: " + strings.Join(problems, "; ")
		r.event(st, "rollback-failed", "", "%s", st.Reason)
		r.save(st)
		return &RolledBackError{Reason: st.Reason, Failed: true}
	}
	st.Phase = PhaseRolledBack
	r.event(st, "rolled-back", "", "every worker is back on %s in %s; %s rejected: %s",
		label(st.FromVersion, st.From), st.Finished.Sub(st.Started).Round(time.Millisecond), buildinfo.ShortSHA(st.To), reason)
	if err := r.save(st); err != nil {
		return err
	}
	return &RolledBackError{Reason: reason}
}

func (r *Runner) event(st *State, kind, unit, format string, args ...any) {
	e := Event{Time: r.Now().UTC(), Rollout: st.ID, Kind: kind, Unit: unit, Message: fmt.Sprintf(format, args...)}
	st.Events = append(st.Events, e)
	if n := len(st.Events); n > maxEvents {
		st.Events = slices.Clone(st.Events[n-maxEvents:])
	}
	f := logrus.Fields{"rollout": st.ID, "event": kind}
	if unit != "" {
		f["unit"] = unit
	}
	r.Log.WithFields(f).Info(e.Message)
	if r.OnEvent != nil {
		r.OnEvent(e)
	}
}

func (r *Runner) save(st *State) error {
	st.Updated = r.Now().UTC()
	if r.Persist == nil {
		return nil
	}
	if err := r.Persist.Save(st); err != nil {
		return fmt.Errorf("persist roll-out %s: %w", st.ID, err)
	}
	return nil
}

func (r *Runner) sleep(ctx context.Context, d time.Duration) error { return sleep(ctx, d) }

// sleep waits d or until ctx ends (its error then).
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func label(version, sha string) string {
	if version == "" {
		return buildinfo.ShortSHA(sha)
	}
	return version + " (" + buildinfo.ShortSHA(sha) + ")"
}

type discardWriter struct{}

func (discardWriter) Write(p []byte) (int, error) { return len(p), nil }
