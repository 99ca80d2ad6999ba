package suite

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/lodis/lodis/bench/report"
)

// stage is one part of the benchmark. run returns the report's tables for
// it; titles lists them in order, so that a stage that is not run or fails
// still leaves one marked table per title.
type stage struct {
	name     string // for Options.Stages, e.g. "cold"
	title    string // for progress lines
	titles   []string
	estimate func(quick bool) time.Duration
	run      func(ctx context.Context, e *env) ([]report.Table, error)
}

// Table titles, shared by the stages and skipped.
const (
	titleCold       = "1. Cold vs warm activation"
	titleAblation   = "1b. What the cold start costs: hardening options one at a time"
	titleGroups     = "1c. What the cold start costs: the installed unit less a group of options"
	titleThroughput = "2. Throughput and latency"
	titleFootprint  = "3. Footprint: 10 ports enabled"
	titleUpgrade    = "4. Upgrade under load"
	titleUpgradeLod = "4b. Upgrade under load: a bad binary rolled back"
	titleChaos      = "5. Chaos: workers aborting at random, through nginx vs direct"
	titleKill       = "5b. Detection to serving after kill -9"
	titleSupRSS     = "5c. Supervisor footprint"
	titleGoals      = "6. Upgrades nobody sees, a sandbox that costs little: the goals in one place"
)

var allStages = []stage{
	{name: "cold", title: "cold vs warm activation", titles: []string{titleCold, titleAblation, titleGroups},
		estimate: func(q bool) time.Duration { return pick(q, 8*time.Second, 100*time.Second) }, run: coldStage},
	{name: "throughput", title: "throughput and latency", titles: []string{titleThroughput},
		estimate: func(q bool) time.Duration { return pick(q, 16*time.Second, 140*time.Second) }, run: throughputStage},
	{name: "footprint", title: "footprint", titles: []string{titleFootprint},
		estimate: func(q bool) time.Duration { return pick(q, 6*time.Second, 10*time.Second) }, run: footprintStage},
	{name: "upgrade", title: "upgrade under load", titles: []string{titleUpgrade, titleUpgradeLod},
		estimate: func(q bool) time.Duration { return pick(q, 40*time.Second, 80*time.Second) }, run: upgradeStage},
	{name: "chaos", title: "chaos", titles: []string{titleChaos, titleKill, titleSupRSS},
		estimate: func(q bool) time.Duration { return pick(q, 25*time.Second, 85*time.Second) }, run: chaosStage},
	{name: "goals", title: "the goals in one place", titles: []string{titleGoals},
		estimate: func(q bool) time.Duration { return 3 * time.Second }, run: goalsStage},
}

// StageNames lists the stages in the order they run, for Options.Stages.
func StageNames() []string {
	var out []string
	for _, s := range allStages {
		out = append(out, s.name)
	}
	return out
}

func selectStages(names []string) ([]string, error) {
	if len(names) == 0 {
		return StageNames(), nil
	}
	for _, n := range names {
		if !contains(StageNames(), n) {
			return nil, fmt.Errorf("unknown stage %q: want one of %s", n, strings.Join(StageNames(), ", "))
		}
	}
	return names, nil
}

// skipped returns s's tables, each marked not run for reason.
func skipped(s stage, reason string) []report.Table {
	var out []report.Table
	for _, t := range s.titles {
		out = append(out, report.Table{Title: t, NotRun: reason})
	}
	return out
}

func pick[T any](quick bool, q, full T) T {
	if quick {
		return q
	}
	return full
}

// plan is how much each stage measures: a full run, or a quick one.
type plan struct {
	coldSamples     int           // activations per variant (cold, warm, always-on, direct exec)
	ablationSamples int           // activations per hardening option; 0 skips the ablation
	maxDuration     time.Duration // each closed-loop throughput run
	rounds          int           // peak and fixed-rate runs per server, interleaved
	rateDuration    time.Duration // each fixed-rate run
	upgradeSteady   time.Duration // load before the upgrade starts
	upgradeTail     time.Duration // load after the last instance is healthy
	chaosDuration   time.Duration
}

func planFor(quick bool) plan {
	if quick {
		return plan{coldSamples: 15, maxDuration: 2 * time.Second, rounds: 1, rateDuration: 2 * time.Second,
			upgradeSteady: 3 * time.Second, upgradeTail: 2 * time.Second, chaosDuration: 15 * time.Second}
	}
	return plan{coldSamples: 100, ablationSamples: 20, maxDuration: 8 * time.Second, rounds: 3,
		rateDuration: 5 * time.Second, upgradeSteady: 10 * time.Second, upgradeTail: 5 * time.Second,
		chaosDuration: 60 * time.Second}
}

// progress prints one line as each stage starts and ends: the stage, the
// time elapsed since the run began, and the time left, estimated from the
// stages' usual durations scaled by how far off the estimates were so far.
type progress struct {
	w         io.Writer
	start     time.Time
	total     int
	n         int
	remaining []time.Duration // estimates of the stages not yet ended, including the current
	estDone   time.Duration   // sum of the estimates of the ended stages
	ended     int             // steps ended
	name      string
	began     time.Time
	inStage   bool
}

func newProgress(w io.Writer, quick bool, stages []string) *progress {
	p := &progress{w: w, start: time.Now(), remaining: []time.Duration{setupEstimate}}
	for _, s := range allStages {
		if contains(stages, s.name) {
			p.remaining = append(p.remaining, s.estimate(quick))
		}
	}
	p.total = len(p.remaining)
	mode := "full"
	if quick {
		mode = "quick"
	}
	fmt.Fprintf(w, "lodis-bench: %s run, %d steps, about %s\n", mode, p.total, round(sum(p.remaining)))
	return p
}

func (p *progress) begin(name string) {
	p.n++
	p.name, p.began, p.inStage = name, time.Now(), true
	fmt.Fprintf(p.w, "[%d/%d] %-26s started   elapsed %-7s ETA %s\n", p.n, p.total, name, round(p.elapsed()), round(p.eta()))
}

func (p *progress) end() {
	p.inStage = false
	p.ended++
	if len(p.remaining) > 0 {
		p.estDone += p.remaining[0]
		p.remaining = p.remaining[1:]
	}
	fmt.Fprintf(p.w, "[%d/%d] %-26s done in %-6s elapsed %-7s ETA %s\n", p.n, p.total, p.name,
		round(time.Since(p.began)), round(p.elapsed()), round(p.eta()))
}

func (p *progress) done(path string) {
	fmt.Fprintf(p.w, "lodis-bench: wrote %s in %s\n", path, round(p.elapsed()))
}

func (p *progress) elapsed() time.Duration { return time.Since(p.start) }

// eta is what is left of the estimates (less what the current stage has
// used), scaled by the time the ended stages took over their estimates.
func (p *progress) eta() time.Duration {
	left := sum(p.remaining)
	spent := p.elapsed()
	if p.inStage && len(p.remaining) > 0 {
		in := time.Since(p.began)
		left -= min(in, p.remaining[0])
		spent -= in
	}
	// Machine set-up alone says little about the stages: scale once a stage
	// has ended.
	if p.ended >= 2 && p.estDone > 0 && spent > 0 {
		left = time.Duration(float64(left) * min(max(float64(spent)/float64(p.estDone), 0.5), 3))
	}
	return max(left, 0)
}

func sum(ds []time.Duration) time.Duration {
	var t time.Duration
	for _, d := range ds {
		t += d
	}
	return t
}

func round(d time.Duration) time.Duration { return d.Round(time.Second) }
