package rollout

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/lodis/lodis/internal/metrics"
	"github.com/lodis/lodis/internal/release"
)

// What the roll-out service tells the metrics: the roll-outs (how many
// ended, how, how long they took, whether one is under way), and, read from
// the release store, its active and previous releases and the releases it
// refused.

// observeRollout sets lodis_rollout_in_progress from st (nil: none known)
// and, when ended is true, counts st as a roll-out that just ended.
func (s *Service) observeRollout(st *State, ended bool) {
	if s.Metrics == nil {
		return
	}
	s.Metrics.SetRolloutInProgress(st != nil && !st.Phase.Finished())
	if !ended {
		return
	}
	end := st.Finished
	if end.IsZero() {
		end = st.Updated
	}
	s.Metrics.CountRollout(st.Kind, string(st.Phase), max(end.Sub(st.Started), 0).Seconds())
}

// releaseWatch keeps lodis_release_info and lodis_releases_rejected_total
// in step with the release store. It reads the store (Store.List) only when
// releases.json, releases/ or the current link changed since the last read.
type releaseWatch struct {
	store   *release.Store
	metrics *metrics.Metrics
	key     string    // what the last read saw of the store's files
	newest  time.Time // the newest rejection counted
}

// poll reads the store if it changed and updates the metrics. A store that
// cannot be read keeps the values of the last read.
func (w *releaseWatch) poll() {
	if w.metrics == nil {
		return
	}
	key := w.stamp()
	if key == w.key {
		return
	}
	l, err := w.store.List()
	if err != nil {
		return
	}
	w.key = key
	var rs []metrics.Release
	for _, e := range l.Releases {
		if e.State == "active" || e.State == "previous" {
			rs = append(rs, metrics.Release{SHA256: e.SHA256, Version: e.Version, State: e.State})
		}
	}
	w.metrics.SetReleases(rs)
	// releases.json keeps the last 200 rejections: each is counted once,
	// by its time, whatever the history drops. A supervisor that starts
	// counts the whole history, so that the counter goes on from where the
	// last one left it.
	counts, newest := map[string]int{}, w.newest
	for _, r := range l.Rejected {
		if r.Time.After(w.newest) {
			counts[r.Stage]++
			newest = later(newest, r.Time)
		}
	}
	w.newest = newest
	for stage, n := range counts {
		w.metrics.CountRejections(stage, n)
	}
}

// stamp sums up what a change of the store's releases touches: the
// bookkeeping file, the releases directory, the current link and what it
// points at.
func (w *releaseWatch) stamp() string {
	st := func(p string, follow bool) string {
		stat := os.Lstat
		if follow {
			stat = os.Stat
		}
		fi, err := stat(p)
		if err != nil {
			return "-"
		}
		return fmt.Sprintf("%d.%d", fi.ModTime().UnixNano(), fi.Size())
	}
	cur := w.store.CurrentLink()
	target, _ := os.Readlink(cur)
	return st(filepath.Join(w.store.Root, "releases.json"), false) + " " + st(filepath.Join(w.store.Root, "releases"), false) +
		" " + target + " " + st(cur, true)
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
