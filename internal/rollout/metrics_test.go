package rollout

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lodis/lodis/internal/release"
)

// exposition is the Service's metrics as Prometheus reads them.
func (r *rig) exposition(t *testing.T) []string {
	return strings.Split(r.svc.Metrics.Text(), "\n")
}

// waitLines waits until the exposition has every line of want.
func (r *rig) waitLines(t *testing.T, what string, want ...string) {
	t.Helper()
	var have []string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		have = r.exposition(t)
		missing := slices.DeleteFunc(slices.Clone(want), func(l string) bool { return slices.Contains(have, l) })
		if len(missing) == 0 {
			return
		}
	}
	var lodis []string
	for _, l := range have {
		if strings.HasPrefix(l, "lodis_") {
			lodis = append(lodis, l)
		}
	}
	t.Fatalf("%s: the exposition lacks some of %q; it has:\n%s", what, want, strings.Join(lodis, "\n"))
}

// TestServiceMetrics: the roll-out service shows the store's active and
// previous releases and its rejections (each counted once, the history
// included), and each roll-out root drives: in progress while it runs,
// counted by outcome with its duration once it ends.
func TestServiceMetrics(t *testing.T) {
	drop := func(root, name string) string {
		p := filepath.Join(root, "incoming", name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte("junk"), 0o755)
		return p
	}
	r := newRig(t, func(store *release.Store, root string) {
		store.SetPrevious(newR)
		store.Reject(drop(root, "a"), "", "", "", "not an executable")
		store.MarkRejected(badR, "canary answered 503")
	})
	r.waitLines(t, "at start",
		`lodis_release_info{sha256="`+oldR+`",state="active",version=""} 1`,
		`lodis_release_info{sha256="`+newR+`",state="previous",version=""} 1`,
		`lodis_releases_rejected_total{stage="validation"} 1`,
		`lodis_releases_rejected_total{stage="rollout"} 1`,
		`lodis_rollout_in_progress 0`,
		`lodis_rollouts_total{kind="upgrade",outcome="done"} 0`)

	store := release.NewStore(r.root)
	// A new rejection: counted once, however often the store is read.
	store.Reject(drop(r.root, "b"), "", "", "", "bad signature")
	r.waitLines(t, "after a rejection", `lodis_releases_rejected_total{stage="validation"} 2`)

	rs := NewStore(store)
	st := NewState(KindUpgrade, oldR, newR, time.Now().Add(-3*time.Second))
	st.Phase = PhaseRolling
	st.Events = append(st.Events, Event{Time: time.Now(), Rollout: st.ID, Kind: "started"})
	if err := rs.Save(st); err != nil {
		t.Fatal(err)
	}
	r.waitLines(t, "roll-out under way", `lodis_rollout_in_progress 1`)

	st.Phase, st.Finished = PhaseDone, st.Started.Add(3*time.Second)
	st.Events = append(st.Events, Event{Time: time.Now(), Rollout: st.ID, Kind: "done"})
	if err := rs.Save(st); err != nil {
		t.Fatal(err)
	}
	if err := store.Activate(newR); err != nil {
		t.Fatal(err)
	}
	store.SetPrevious(oldR)
	r.waitLines(t, "roll-out done",
		`lodis_rollout_in_progress 0`,
		`lodis_rollouts_total{kind="upgrade",outcome="done"} 1`,
		`lodis_rollout_duration_seconds_sum{kind="upgrade",outcome="done"} 3`,
		`lodis_rollout_duration_seconds_bucket{kind="upgrade",outcome="done",le="2.5"} 0`,
		`lodis_rollout_duration_seconds_bucket{kind="upgrade",outcome="done",le="5"} 1`,
		`lodis_release_info{sha256="`+newR+`",state="active",version=""} 1`,
		`lodis_release_info{sha256="`+oldR+`",state="previous",version=""} 1`)
	for _, l := range r.exposition(t) {
		if strings.HasPrefix(l, `lodis_release_info{sha256="`+newR+`",state="previous"`) {
			t.Errorf("the release that became active is still shown previous: %s", l)
		}
	}
	// Read again and again, the same roll-out is counted once.
	time.Sleep(100 * time.Millisecond)
	r.waitLines(t, "later", `lodis_rollouts_total{kind="upgrade",outcome="done"} 1`, `lodis_releases_rejected_total{stage="validation"} 2`)
}
