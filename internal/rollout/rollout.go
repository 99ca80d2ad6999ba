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
//  3. Canary: the first port's worker is replaced, and the new worker must
//     run the new release and answer its health check within HealthTimeout.
//     With Overlap, the port's other unit (lodis-alt@PORT.service for
//     lodis@PORT.service, and back) is started beside the old worker,
//     sharing the port's socket, so that the old worker accepts while the
//     new one starts; the old one is stopped (it drains) once the new one
//     answered healthy, so two releases share a port for no longer than the
//     start, the check and the drain. Without Overlap the unit is restarted
//     in place (systemd try-restart: stop with drain, start). The canary is
//     then watched for CanarySoak (default 5 s): every answer must be
//     healthy, from the new release, and from the same process (a restart
//     during the soak is a crash).
//  4. The rest, one at a time: replaced, the new release healthy before the
//     next one goes. A last sweep replaces any running worker still on
//     another release.
//
// Which release a worker runs is read from what its process executes
// (Ops.Check), never asked of the app. The supervisor is not part of a
// roll-out: it runs the installed lodis, upgraded by the package manager.
//
// Any failure before the end — a start job that fails, a health check that
// fails or times out, a canary that restarts — rolls back: current is flipped
// back, a new worker still beside its old one is stopped (the old one never
// stopped serving), every port already moved is replaced again and must
// report the old release, and the new release is marked rejected with the
// reason. Every step is an Event.
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
	"os"
	"slices"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/lodis/lodis/internal/buildinfo"
	"github.com/lodis/lodis/internal/health"
	"github.com/lodis/lodis/internal/systemd"
)

// Phase is where a roll-out stands.
type Phase string

// Phases, in the order a roll-out goes through them.
const (
	PhasePending Phase = "pending" // planned, nothing changed yet
	PhaseRolling Phase = "rolling" // current flipped; moving workers one by one
	// PhaseSupervisor is where an older lodis restarted its supervisor
	// onto the new release, after the workers; a State found in it is
	// finished at once.
	PhaseSupervisor  Phase = "supervisor"
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
	// DriverPID is the process driving the roll-out (root's lodis upgrade
	// or lodis rollback), so that the supervisor can tell one whose driver
	// died and have root take it up.
	DriverPID int     `json:"driver_pid,omitempty"`
	Events    []Event `json:"events"`
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
//
// A roll-out names each port by its worker unit, lodis@PORT.service (the
// port unit); the port may be served by that unit or by its alternate,
// lodis-alt@PORT.service, which shares the port's socket, or by both while
// one replaces the other. Methods that take "unit" act on exactly that unit.
type Ops interface {
	// Running lists the port units of the ports that have a worker running
	// now (either unit), in port order.
	Running(ctx context.Context) ([]string, error)
	// Listening lists the port units whose socket is listening, in port order.
	Listening(ctx context.Context) ([]string, error)
	// Workers lists the units that serve the port of port unit u now
	// (running, not stopping): none, one, or both during a replacement.
	Workers(ctx context.Context, u string) ([]string, error)
	// Restart restarts unit if it runs (try-restart: an idle unit stays
	// idle) and waits for the job; an error when the job did not succeed.
	Restart(ctx context.Context, unit string) error
	// Start starts unit beside whatever serves its port, sharing the
	// socket, and waits until systemd counts it started (the app's
	// READY=1, or its exec for an app that sends none).
	Start(ctx context.Context, unit string) error
	// Stop stops unit and waits until it has drained and exited.
	Stop(ctx context.Context, unit string) error
	// Check asks unit for its health and tells which process answered and
	// which release that process runs. The answer must come from unit's
	// own processes, not from another unit sharing the socket; for a port
	// unit whose port runs nothing, the check's connection activates it.
	// The error is for no answer from unit, or an unhealthy one (a
	// *health.StatusError when the worker answered other than 2xx).
	Check(ctx context.Context, unit string) (Worker, error)
}

// Worker is a worker process as Ops.Check found it.
type Worker struct {
	PID     uint32
	Release string // the SHA-256 of the release it runs; "" when it runs none in the store
	Version string // the health answer's "version", when it has one
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
// keeps no state of its own between calls (every Run waits for the stop
// jobs it started before it returns).
type Runner struct {
	Ops      Ops
	Releases Releases
	Persist  Persister
	// CanarySoak is how long the canary is watched; default 5 s.
	CanarySoak time.Duration
	// ProbeInterval is the pause between health probes; default 250 ms.
	ProbeInterval time.Duration
	// HealthTimeout is how long a restarted worker has to run the new
	// release and answer healthy; default 15 s.
	HealthTimeout time.Duration
	// Overlap replaces each port's worker without a gap: the port's other
	// unit is started on the new release beside the old worker, sharing its
	// socket, and the old worker is stopped (drained) only once the new one
	// answers healthy; a rollback during the overlap just stops the new
	// unit. Without it a worker is restarted in place, and the port's new
	// connections wait for the new worker's start.
	Overlap bool
	// OnEvent, if set, receives every event as it happens.
	OnEvent func(Event)
	// Log receives every event too; default: discard.
	Log logrus.FieldLogger
	// Now tells the time; default time.Now.
	Now func() time.Time

	// draining are the old workers' stop jobs of this Run that the
	// roll-out does not wait for (see stopBehind).
	draining []drain
}

// drain is the stop of an old worker, draining while the roll-out goes on.
type drain struct {
	unit string
	done chan error
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
// *RolledBackError when it was rolled back, or the context's error when ctx
// ended first (st is then persisted where it stood and a later Run takes it
// up).
//
// A State in PhasePending starts afresh. A State found in another unfinished
// phase is a roll-out whose driver stopped: Run resumes it as the package
// documentation says.
func (r *Runner) Run(ctx context.Context, st *State) error {
	r.defaults()
	defer r.drained()
	st.DriverPID = os.Getpid()
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
		r.event(st, "resumed", "", "the workers were moved before an older lodis restarted its supervisor: finishing the roll-out")
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
		// Recorded before the flip: whoever sees current move (lodis drop
		// --wait) finds the roll-out that moves it.
		if err := r.save(st); err != nil {
			return err
		}
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
			if !r.portOn(ctx, u, st.To) {
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
		w, err := r.move(ctx, st, u)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return r.rollback(ctx, st, err.Error())
		}
		if i == 0 && !st.CanaryPassed {
			if err := r.soak(ctx, st, w); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return r.rollback(ctx, st, err.Error())
			}
		}
	}
	if err := r.drained(); err != nil {
		return r.rollback(ctx, st, err.Error())
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
		if slices.Contains(st.Moved, u) || r.portOn(ctx, u, st.To) {
			continue
		}
		st.Units = append(st.Units, u)
		if _, err := r.move(ctx, st, u); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return r.rollback(ctx, st, err.Error())
		}
	}
	r.event(st, "workers-moved", "", "%d worker(s) on %s", len(st.Moved), buildinfo.ShortSHA(st.To))
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

// move puts port unit u's port on st.To and returns the unit that serves it.
func (r *Runner) move(ctx context.Context, st *State, u string) (string, error) {
	st.Current = u
	if err := r.save(st); err != nil {
		return "", err
	}
	w, err := r.converge(ctx, st, u, st.To, "")
	if err != nil {
		return "", err
	}
	st.Moved = append(st.Moved, u)
	st.Current = ""
	r.event(st, "moved", u, "on %s (%d of %d)", buildinfo.ShortSHA(st.To), len(st.Moved), len(st.Units))
	return w, r.save(st)
}

// converge makes the port of port unit u served by workers on sha alone,
// and returns the unit that serves it. Events are named with prefix ("" or
// "rollback-").
func (r *Runner) converge(ctx context.Context, st *State, u, sha, prefix string) (string, error) {
	ws, err := r.Ops.Workers(ctx, u)
	if err != nil {
		return "", fmt.Errorf("list the workers of %s: %w", u, err)
	}
	var on, off []string
	for _, w := range ws {
		if wk, err := r.Ops.Check(ctx, w); err == nil && wk.Release == sha {
			on = append(on, w)
		} else {
			off = append(off, w)
		}
	}
	switch {
	case len(ws) == 0:
		// Idle: the check's connection activates the port on current,
		// which is sha.
		r.event(st, prefix+"activating", u, "no worker runs: activating %s on %s", u, buildinfo.ShortSHA(sha))
		if _, err := r.waitRelease(ctx, u, sha); err != nil {
			return "", err
		}
		return u, nil
	case len(on) > 0:
		// Already there, or a replacement was interrupted once the new
		// worker ran: whatever else runs goes.
		if len(off) == 0 && len(on) == 1 {
			r.event(st, prefix+"already-moved", u, "already on %s (%s)", buildinfo.ShortSHA(sha), on[0])
		}
		return on[0], r.stop(ctx, st, prefix, append(off, on[1:]...))
	case !r.Overlap:
		for _, w := range off {
			r.event(st, prefix+"restarting", w, "restarting onto %s", buildinfo.ShortSHA(sha))
			if err := r.Ops.Restart(ctx, w); err != nil {
				return "", fmt.Errorf("restart %s: %w", w, err)
			}
		}
		if _, err := r.waitRelease(ctx, off[0], sha); err != nil {
			return "", err
		}
		return off[0], r.stop(ctx, st, prefix, off[1:])
	}
	// Both units run and neither is on sha: one of them makes room.
	if len(off) > 1 {
		if err := r.stop(ctx, st, prefix, off[1:]); err != nil {
			return "", err
		}
		off = off[:1]
	}
	next := otherUnit(off[0])
	r.event(st, prefix+"starting", next, "starting %s on %s beside %s", next, buildinfo.ShortSHA(sha), off[0])
	if err := r.Ops.Start(ctx, next); err != nil {
		r.discard(ctx, st, prefix, next)
		return "", fmt.Errorf("start %s: %w", next, err)
	}
	if _, err := r.waitRelease(ctx, next, sha); err != nil {
		r.discard(ctx, st, prefix, next)
		return "", err
	}
	r.event(st, prefix+"ready", next, "%s healthy on %s: stopping %s", next, buildinfo.ShortSHA(sha), off[0])
	if prefix == "" {
		// Forward, the next port need not wait for this one's drain.
		r.stopBehind(ctx, st, off)
		return next, nil
	}
	return next, r.stop(ctx, st, prefix, off)
}

// stopBehind stops units without waiting: each drains while the roll-out
// goes on to the next port, so two releases share a port no longer than its
// drain. drained waits for them.
func (r *Runner) stopBehind(ctx context.Context, st *State, units []string) {
	ctx = context.WithoutCancel(ctx)
	for _, w := range units {
		r.event(st, "stopping", w, "stopping %s (it drains while the roll-out goes on)", w)
		d := drain{unit: w, done: make(chan error, 1)}
		go func() { d.done <- r.Ops.Stop(ctx, w) }()
		r.draining = append(r.draining, d)
	}
}

// drained waits until every stop stopBehind started has ended, and returns
// their errors.
func (r *Runner) drained() error {
	var errs []error
	for _, d := range r.draining {
		if err := <-d.done; err != nil {
			errs = append(errs, fmt.Errorf("stop %s: %w", d.unit, err))
		}
	}
	r.draining = nil
	return errors.Join(errs...)
}

// stop stops units, each after its drain.
func (r *Runner) stop(ctx context.Context, st *State, prefix string, units []string) error {
	for _, w := range units {
		r.event(st, prefix+"stopping", w, "stopping %s", w)
		if err := r.Ops.Stop(ctx, w); err != nil {
			return fmt.Errorf("stop %s: %w", w, err)
		}
	}
	return nil
}

// discard stops a new worker that did not make it; the old one beside it
// never stopped serving.
func (r *Runner) discard(ctx context.Context, st *State, prefix, unit string) {
	r.event(st, prefix+"discarding", unit, "stopping %s: the worker beside it serves on", unit)
	if err := r.Ops.Stop(context.WithoutCancel(ctx), unit); err != nil {
		r.event(st, prefix+"discard-failed", unit, "stop %s: %v", unit, err)
	}
}

// portOn reports whether the port of port unit u is served by workers on
// sha alone (an idle port is activated to tell).
func (r *Runner) portOn(ctx context.Context, u, sha string) bool {
	ws, err := r.Ops.Workers(ctx, u)
	if err != nil {
		return false
	}
	if len(ws) == 0 {
		ws = []string{u}
	}
	for _, w := range ws {
		if wk, err := r.Ops.Check(ctx, w); err != nil || wk.Release != sha {
			return false
		}
	}
	return true
}

// otherUnit is the unit that takes over from unit: a port's two worker
// units take turns.
func otherUnit(unit string) string {
	port, typ, _ := systemd.ParseUnit(unit)
	if typ == "alt" {
		return systemd.ServiceUnit(port)
	}
	return systemd.AltUnit(port)
}

// waitRelease checks u until its worker runs sha and answers healthy, for
// at most HealthTimeout. Three answers in a row that are definite but wrong
// (unhealthy, or from another release) fail at once; errors reaching the
// worker are retried.
func (r *Runner) waitRelease(ctx context.Context, u, sha string) (Worker, error) {
	deadline := r.Now().Add(r.HealthTimeout)
	var last error
	wrong := 0
	for {
		w, err := r.Ops.Check(ctx, u)
		var he *health.StatusError
		switch {
		case err == nil && w.Release == sha:
			return w, nil
		case err == nil:
			wrong++
			last = fmt.Errorf("its worker (pid %d) runs release %s", w.PID, label("", w.Release))
		case errors.As(err, &he):
			wrong++
			last = err
		default:
			wrong = 0
			last = err
		}
		if wrong >= 3 {
			return w, fmt.Errorf("health check of %s failed: %v", u, last)
		}
		if !r.Now().Before(deadline) {
			return w, fmt.Errorf("health check of %s: not healthy on %s within %s: %v", u, buildinfo.ShortSHA(sha), r.HealthTimeout, last)
		}
		// A worker not reached yet (still starting) is asked again soon; a
		// wrong answer after the full interval.
		pause := r.ProbeInterval
		if wrong == 0 {
			pause = min(pause, startingPause)
		}
		if err := r.sleep(ctx, pause); err != nil {
			return w, err
		}
	}
}

// startingPause is how soon waitRelease asks again a worker it could not
// reach: one that is starting answers within tens of milliseconds.
const startingPause = 50 * time.Millisecond

// soak watches the canary for CanarySoak.
func (r *Runner) soak(ctx context.Context, st *State, u string) error {
	r.event(st, "canary-soak", u, "watching the canary for %s", r.CanarySoak)
	first, err := r.Ops.Check(ctx, u)
	if err != nil {
		return fmt.Errorf("canary %s: %w", u, err)
	}
	end := r.Now().Add(r.CanarySoak)
	fails := 0
	for r.Now().Before(end) {
		if err := r.sleep(ctx, r.ProbeInterval); err != nil {
			return err
		}
		w, err := r.Ops.Check(ctx, u)
		switch {
		case err != nil:
			fails++
			if fails >= 2 {
				return fmt.Errorf("canary %s failed its health check during the soak: %w", u, err)
			}
			continue
		case w.Release != st.To:
			return fmt.Errorf("canary %s runs release %s during the soak", u, label("", w.Release))
		case w.PID != first.PID:
			return fmt.Errorf("canary %s restarted during the soak (pid %d → %d)", u, first.PID, w.PID)
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
	// Old workers still draining are gone first; a port whose stop failed
	// is mended by its converge below.
	if err := r.drained(); err != nil {
		r.event(st, "rollback-note", "", "%v", err)
	}
	if err := r.Releases.Activate(st.From); err != nil {
		problems = append(problems, "flip back: "+err.Error())
	}
	back := slices.Clone(st.Moved)
	if st.Current != "" && !slices.Contains(back, st.Current) {
		back = append(back, st.Current)
	}
	slices.Reverse(back)
	for _, u := range back {
		if _, err := r.converge(ctx, st, u, st.From, "rollback-"); err != nil {
			problems = append(problems, err.Error())
			continue
		}
		r.event(st, "rollback-moved", u, "back on %s", buildinfo.ShortSHA(st.From))
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
	if sha == "" {
		return "(none in the store)"
	}
	if version == "" {
		return buildinfo.ShortSHA(sha)
	}
	return version + " (" + buildinfo.ShortSHA(sha) + ")"
}

type discardWriter struct{}

func (discardWriter) Write(p []byte) (int, error) { return len(p), nil }
