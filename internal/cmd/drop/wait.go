package drop

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/lodis/lodis/internal/buildinfo"
	"github.com/lodis/lodis/internal/release"
	"github.com/lodis/lodis/internal/rollout"
)

// waiter follows one dropped release (by its SHA-256) through what lodis
// upgrade and the supervisor record, until an outcome or the timeout.
type waiter struct {
	cfg   Config
	sha   string
	since time.Time // records older than the drop are not about it
	// wasActive: the release was the active one when it was dropped. A
	// release that became active since, with no roll-out to it recorded
	// yet, is one whose roll-out is starting: lodis upgrade flips current
	// first and records the roll-out once it has listed the running workers.
	wasActive bool
	dropped   os.FileInfo // the drop as made, to tell whether it is still pending
	final     string      // where it was dropped
	now       func() time.Time
	out       io.Writer

	said string // the last progress line printed
}

// verdict is what one look at the store found; final is false while the
// release is still on its way.
type verdict struct {
	final bool
	code  int
	msg   string
}

func (w *waiter) run(ctx context.Context) int {
	deadline := time.NewTimer(w.cfg.Timeout)
	defer deadline.Stop()
	store := release.NewStore(w.cfg.Root)
	roll := rollout.NewStore(store)
	for {
		v := w.look(store, roll)
		if v.final {
			fmt.Fprintf(w.out, "lodis drop: %s; %s after the drop\n", v.msg, w.now().Sub(w.since).Round(100*time.Millisecond))
			return v.code
		}
		w.progress(v.msg)
		select {
		case <-ctx.Done():
			fmt.Fprintf(w.out, "lodis drop: stopped waiting (%v); the drop goes on: %s\n", ctx.Err(), v.msg)
			return ExitRejected
		case <-deadline.C:
			fmt.Fprintf(w.out, "lodis drop: timed out after %s waiting for release %s: %s\n", w.cfg.Timeout, buildinfo.ShortSHA(w.sha), v.msg)
			return ExitRejected
		case <-time.After(w.cfg.Poll):
		}
	}
}

// progress prints msg when it differs from the last line printed.
func (w *waiter) progress(msg string) {
	if msg != w.said {
		w.said = msg
		fmt.Fprintf(w.out, "lodis drop: %s\n", msg)
	}
}

// look reads the release store and the roll-out state once.
func (w *waiter) look(store *release.Store, roll *rollout.Store) verdict {
	short := buildinfo.ShortSHA(w.sha)
	l, lerr := store.List()
	st, serr := roll.Load()
	if st != nil && (st.To != w.sha || st.Started.Before(w.since)) {
		st = nil // the last roll-out is another release's, or older than the drop
	}
	if st != nil {
		took := st.Finished.Sub(st.Started).Round(100 * time.Millisecond)
		switch st.Phase {
		case rollout.PhaseDone:
			if lerr == nil && l.Active == w.sha {
				return verdict{true, ExitDone, fmt.Sprintf("rolled out: release %s is active, every running worker is on it (roll-out %s took %s)", name(st.ToVersion, w.sha), st.ID, took)}
			}
			if lerr == nil {
				return verdict{true, ExitRejected, fmt.Sprintf("roll-out %s of release %s was done, but the active release is now %s", st.ID, name(st.ToVersion, w.sha), buildinfo.ShortSHA(l.Active))}
			}
		case rollout.PhaseRolledBack:
			return verdict{true, ExitRejected, fmt.Sprintf("rolled back: release %s was rejected during its roll-out %s: %s", name(st.ToVersion, w.sha), st.ID, oneLine(st.Reason))}
		case rollout.PhaseFailed:
			return verdict{true, ExitRejected, fmt.Sprintf("roll-out %s of release %s failed and its rollback is incomplete: %s", st.ID, name(st.ToVersion, w.sha), oneLine(st.Reason))}
		}
	}
	if lerr == nil {
		for _, r := range l.Rejected { // newest first
			if r.Time.Before(w.since) {
				break
			}
			if r.SHA256 == w.sha && r.Stage != "rollout" {
				return verdict{true, ExitRejected, fmt.Sprintf("rejected by %s: release %s: %s", r.Stage, name(r.Version, w.sha), oneLine(r.Reason))}
			}
		}
	}
	pending := w.pending()
	switch {
	case lerr != nil:
		return verdict{msg: "cannot read the release store: " + lerr.Error()}
	case serr != nil:
		return verdict{msg: "cannot read the roll-out state: " + serr.Error()}
	case st != nil:
		return verdict{msg: fmt.Sprintf("roll-out %s of release %s: %s, %d of %d running workers moved", st.ID, name(st.ToVersion, w.sha), st.Phase, len(st.Moved), len(st.Units))}
	case !pending && l.Active == w.sha && w.wasActive:
		return verdict{true, ExitDone, fmt.Sprintf("release %s is the active release already: nothing to roll out", short)}
	case pending:
		return verdict{msg: "the drop waits in " + filepath.Dir(w.final) + " to be taken (by lodis upgrade, started by lodis-upgrade.path)"}
	case l.Active == w.sha:
		return verdict{msg: fmt.Sprintf("release %s is active: its roll-out is starting", short)}
	case store.Has(w.sha):
		return verdict{msg: fmt.Sprintf("release %s was accepted into the store; no roll-out to it has started yet (a newer drop may supersede it)", short)}
	}
	return verdict{msg: "the drop was taken: being validated"}
}

// pending reports whether the drop is still in incoming/, untaken.
func (w *waiter) pending() bool {
	fi, err := os.Lstat(w.final)
	return err == nil && os.SameFile(fi, w.dropped)
}

// name is how a release is shown: "VERSION (SHA12)", or "SHA12" alone
// while its version is unknown.
func name(version, sha string) string {
	if version == "" {
		return buildinfo.ShortSHA(sha)
	}
	return version + " (" + buildinfo.ShortSHA(sha) + ")"
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
