package supervisor

import (
	"fmt"
	"time"

	"github.com/lodis/lodis/internal/systemd"
)

// remedy is one of the supervisor's ways of mending an instance.
type remedy int

const (
	remedyNone          remedy = iota
	remedyRecoverSocket        // failed socket: reset it (and its service), start it
	remedyResetService         // failed worker: reset-failed; the socket starts a fresh one
	remedyRestart              // hung worker: restart it
	remedyIdleStop             // idle worker of an app that never exits by itself: stop it
	remedyResetAlt             // failed alternate worker: reset-failed (the socket starts the port's own)
	nRemedies
)

func (r remedy) String() string {
	return [...]string{"none", "recover-socket", "reset-failed", "restart", "idle-stop", "reset-failed"}[r]
}

// stable reports whether an ActiveState is one a unit rests in; the
// transitional ones (activating, deactivating, reloading) make no event.
func stable(activeState string) bool {
	return activeState == "active" || activeState == "inactive" || activeState == "failed"
}

// classify says what a unit's arrival in state u (from the stable state
// from, "" when unknown) means, and which remedy it calls for.
//
// The rule that keeps an administrator in charge: only "failed" is mended.
// A socket that is inactive/dead was stopped on purpose (systemctl stop, or
// a dependency), and its Result is "success"; a socket that failed (start
// limit of its service, trigger limit, bind error, resources) is "failed"
// with that Result. A worker that is inactive/dead exited when idle, which is
// normal; a worker that is failed crashed or was killed.
func classify(typ, from string, u systemd.UnitState) (string, remedy) {
	switch {
	case typ == "socket" && u.ActiveState == "failed":
		return fmt.Sprintf("socket failed (%s): the port refuses connections", u.Result), remedyRecoverSocket
	case typ == "socket" && u.ActiveState == "inactive" && from != "" && from != "inactive/dead":
		if from == "failed/failed" {
			return "socket reset", remedyNone
		}
		return "socket stopped (by an administrator or a dependency): left stopped", remedyNone
	case typ == "socket" && u.ActiveState == "active":
		return "socket " + u.SubState, remedyNone
	case typ == "alt" && u.ActiveState == "failed":
		return fmt.Sprintf("alternate worker failed (%s)", u.Result), remedyResetAlt
	case typ == "alt" && u.ActiveState == "active":
		return fmt.Sprintf("alternate worker started, pid %d", u.MainPID), remedyNone
	case typ == "alt" && u.ActiveState == "inactive" && activeOf(from) == "active":
		return "alternate worker exited (idle exit or stop)", remedyNone
	case typ == "service" && u.ActiveState == "failed":
		return fmt.Sprintf("worker failed (%s)", u.Result), remedyResetService
	case typ == "service" && u.ActiveState == "active":
		return fmt.Sprintf("worker started, pid %d", u.MainPID), remedyNone
	case typ == "service" && u.ActiveState == "inactive" && activeOf(from) == "active":
		return "worker exited (idle exit or stop)", remedyNone
	case typ == "service" && u.ActiveState == "inactive" && from == "failed/failed":
		return "failed worker reset", remedyNone
	}
	return typ + " " + u.State(), remedyNone
}

// backoff spaces out the remedies of one kind on one instance so that a crash
// loop does not become a restart loop: the first remedy of a streak runs at
// once, the next after 1 s, then 2 s, 4 s … up to max. A streak ends after
// reset without a remedy.
type backoff struct {
	streak int
	last   time.Time
}

func (b *backoff) next(now time.Time, reset, max time.Duration) time.Duration {
	if !b.last.IsZero() && now.Sub(b.last) > reset {
		b.streak = 0
	}
	b.streak++
	b.last = now
	if b.streak == 1 {
		return 0
	}
	d := time.Second << min(b.streak-2, 30)
	if d > max {
		d = max
	}
	return d
}
