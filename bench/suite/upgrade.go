package suite

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/lodis/lodis/internal/health"
	"github.com/lodis/lodis/internal/release"

	"github.com/lodis/lodis/bench/plot"
	"github.com/lodis/lodis/bench/report"
	"github.com/lodis/lodis/internal/buildinfo"
	"github.com/lodis/lodis/internal/load"
	"github.com/lodis/lodis/internal/rollout"
	"github.com/lodis/lodis/internal/testenv"
)

// Load during an upgrade: the same for lodis and every baseline.
const (
	upgradeRate  = 2000 // requests/s over the 10 ports
	upgradeConns = 50   // keep-alive connections, 5 per port
	// upgradeBound bounds a whole upgrade run; the run normally ends
	// Plan.upgradeTail after the upgrade completes.
	upgradeBound = 3 * time.Minute
	// healthyBound is the longest an upgrade may take before the run fails.
	healthyBound = 90 * time.Second
)

// upgradeRun is one upgrade under load.
type upgradeRun struct {
	name   string
	res    *load.Result
	window [2]time.Duration // from the start of the upgrade to the last instance healthy on the new version, from res.Start
	steady load.Summary     // from 1 s after the start of the load to the start of the upgrade
	inside load.Summary     // the window
	soak   time.Duration    // the canary soak inside the window (lodis roll-outs), 0 for the others
}

// underLoad loads targets at upgradeRate and, after the plan's steady time,
// runs upgrade, which must return once every instance is healthy on the new
// version. The load goes on for the plan's tail, then stops.
func (e *env) underLoad(ctx context.Context, name string, targets []string, upgrade func(context.Context) error) (*upgradeRun, error) {
	stop := load.Background(ctx, load.Options{Targets: targets, Rate: upgradeRate, Conns: upgradeConns, Duration: upgradeBound})
	var from, to time.Time
	var uerr error
	select {
	case <-time.After(e.plan.upgradeSteady):
		from = time.Now()
		uctx, cancel := context.WithTimeout(ctx, healthyBound)
		uerr = upgrade(uctx)
		cancel()
		to = time.Now()
		if uerr == nil {
			select {
			case <-time.After(e.plan.upgradeTail):
			case <-ctx.Done():
			}
		}
	case <-ctx.Done():
	}
	r, lerr := stop()
	if uerr != nil {
		return nil, fmt.Errorf("%s: %w", name, uerr)
	}
	if lerr != nil && !(errors.Is(lerr, context.Canceled) && ctx.Err() == nil) {
		return nil, fmt.Errorf("%s: %w", name, lerr)
	}
	u := &upgradeRun{name: name, res: r, window: [2]time.Duration{from.Sub(r.Start), to.Sub(r.Start)}}
	u.steady = r.Between(time.Second, u.window[0])
	u.inside = r.Between(u.window[0], u.window[1])
	return u, nil
}

// upgradeStage measures the baselines every lodis upgrade is compared with,
// under the same load and with the same window: a naive `systemctl restart`
// of each worker in turn, and nginx's own binary upgrade. When the lodis
// upgrade is installed (lodis-upgrade.path), it measures a drop of a new
// binary too.
func upgradeStage(ctx context.Context, e *env) ([]report.Table, error) {
	var runs []*upgradeRun
	var rb *upgradeRun
	var rbState, upState *rollout.State
	if e.has.upgrade {
		v, err := e.variants()
		if err != nil {
			return nil, err
		}
		if _, err := e.m.Systemctl(ctx, "enable", "--now", "lodis-upgrade.path"); err != nil {
			return nil, err
		}
		r, st, err := e.lodisUpgrade(ctx, "lodis upgrade", v.good, v.goodSum)
		if err != nil {
			return nil, err
		}
		runs = append(runs, r)
		upState = st
		// The same roll-out restarting each worker in place (OVERLAP=no in
		// app.conf): what the overlap buys.
		if err := e.setAppConf(ctx, "OVERLAP=no\n"); err != nil {
			return nil, err
		}
		r, _, err = e.lodisUpgrade(ctx, "lodis, OVERLAP=no", v.good2, v.good2Sum)
		if err != nil {
			return nil, err
		}
		if err := e.setAppConf(ctx, ""); err != nil {
			return nil, err
		}
		runs = append(runs, r)
		if rb, rbState, err = e.lodisRollback(ctx, v.bad); err != nil {
			return nil, err
		}
	}
	r, err := e.naiveRestart(ctx)
	if err != nil {
		return nil, err
	}
	runs = append(runs, r)
	if r, err = e.nginxUpgrade(ctx); err != nil {
		return nil, err
	}
	runs = append(runs, r)

	if e.has.upgrade {
		for i, suffix := range []string{"", " no-overlap"} {
			r := runs[i]
			e.figures[figUpgradeFail+suffix] = float64(r.res.Failed)
			e.figures[figUpgradeFast+suffix] = (r.window[1] - r.window[0] - r.soak).Seconds()
		}
		e.figures[figUpgradeP99] = ms(runs[0].inside.P99 - runs[0].steady.P99)
		e.figures[figNoOverlapP99] = ms(runs[1].inside.P99 - runs[1].steady.P99)
	}
	t := report.Table{Title: titleUpgrade, Subject: runs[0].name, Ratios: e.has.upgrade}
	if !e.has.upgrade {
		t.Title += ": baselines (the lodis column is not run, see 4b)"
	}
	for _, r := range runs[1:] {
		t.Peers = append(t.Peers, r.name)
	}
	row := func(metric, unit string, g report.Goal, digits int, f func(r *upgradeRun) float64) {
		row := report.Row{Metric: metric, Unit: unit, Goal: g, Value: f(runs[0]), Digits: digits}
		for _, r := range runs[1:] {
			row.Peers = append(row.Peers, f(r))
		}
		t.Rows = append(t.Rows, row)
	}
	row("failed requests in the window", "", report.Goal{Op: report.AtMost, Value: 0}, 0,
		func(r *upgradeRun) float64 { return float64(r.inside.Failed) })
	row("p99 in the window minus steady p99", "ms", report.Goal{Op: report.AtMost, Value: 5}, 1,
		func(r *upgradeRun) float64 { return ms(r.inside.P99 - r.steady.P99) })
	row("window: upgrade start to all healthy on the new version", "s", report.Goal{Op: report.AtMost, Value: 5}, 2,
		func(r *upgradeRun) float64 { return (r.window[1] - r.window[0]).Seconds() })
	row("window less the canary soak", "s", report.Goal{Op: report.AtMost, Value: 2}, 2,
		func(r *upgradeRun) float64 { return (r.window[1] - r.window[0] - r.soak).Seconds() })
	row("failed requests, whole run", "", report.Goal{Op: report.AtMost, Value: 0}, 0,
		func(r *upgradeRun) float64 { return float64(r.res.Failed) })
	all := runs
	if rb != nil {
		all = append(all, rb)
	}
	var figures []string
	for _, r := range all {
		figures = append(figures, fmt.Sprintf("%s: steady p99 %.1f ms, p99 in the window %.1f ms (max %.1f ms), %d requests in the window, failures %s",
			r.name, ms(r.steady.P99), ms(r.inside.P99), ms(r.inside.Max), r.inside.Total, failures(r.res)))
	}
	lodisHow := ""
	if e.has.upgrade {
		lodisHow = " lodis upgrade: `lodis-upgrade.path` enabled, a build of this tree stamped with another version dropped into `/var/lib/lodis/incoming/` (written aside, renamed into place) and rolled out as installed: validation with its trial run, then each port's new worker started beside the old one on the same socket (`lodis-alt@P.service`), checked healthy, the old one drained; default canary soak (5 s), inside the window; new version = the dropped binary's sha256 on every port's `/__/health`. lodis, OVERLAP=no: the same with `OVERLAP=no` in `/etc/lodis/app.conf`, which restarts each worker in place (the port's new connections wait for the new worker's start), a third build dropped."
		start := runs[0].res.Start
		lodisHow += fmt.Sprintf(" In this run the roll-out started %.2f s after the drop (settle and validation before it) and ended %.2f s later (canary soak included; roll-out %s: %s).",
			upState.Started.Sub(start.Add(runs[0].window[0])).Seconds(), upState.Finished.Sub(upState.Started).Seconds(), upState.ID, upState.Phase)
		soak := time.Duration(upState.CanarySoak)
		if soak == 0 {
			soak = rollout.DefaultCanarySoak
		}
		lodisHow += fmt.Sprintf(" The default canary soak alone (%s) takes the whole of the window's 5 s goal, so with the defaults that goal cannot be met; less the soak, this window was %.2f s.",
			soak, (runs[0].window[1] - runs[0].window[0] - soak).Seconds())
	}
	t.Note = fmt.Sprintf(`Load: package internal/load on the host, a fixed %d requests/s round-robin over 10 ports with %d keep-alive connections (5 per port), a client that never retries (a request net/http would silently re-send on a new connection counts as failed, as it would for wrk or a proxy). Steady: from 1 s after the load starts to the start of the upgrade (%s). Window: from the start of the upgrade to the last instance healthy on the new version (for lodis, from the drop of the binary).%s Naive restart: `+"`systemctl restart lodis@P.service`"+` for the 10 ports one after another; new version = a new worker PID on `+"`/__/health`"+` (the lodis worker drains on SIGTERM, so this baseline already has lodis's drain). nginx: nginx-light serving `+"`return 200`"+` on 10 ports, started as a forking daemon in a transient scope; binary upgrade = USR2 to the master, WINCH to the old master once the new one runs, then QUIT once the old workers are gone; new version = the old master has exited. Goals (the lodis upgrade's): 0 failed requests, p99 in the window ≤ steady p99 + 5 ms, window ≤ 5 s, window less the canary soak ≤ 2 s.

%s.`, upgradeRate, upgradeConns, e.plan.upgradeSteady, lodisHow, strings.Join(figures, "; "))

	var series []plot.Series
	for _, r := range all {
		series = append(series, plot.FromResult(r.name, r.res))
	}
	plots, err := e.savePlots("upgrade", fmt.Sprintf("Upgrade under %d requests/s over 10 ports", upgradeRate), series,
		[]plot.Mark{{At: runs[0].window[0], Label: "upgrade starts"}})
	if err != nil {
		return nil, err
	}
	t.Plots = plots
	if !e.has.upgrade {
		return []report.Table{t, {Title: titleUpgradeLod,
			NotRun: "lodis upgrade (lodis-upgrade.path) is not in this tree; the stage drops a new binary, then a bad one, into /var/lib/lodis/incoming/lodis under the same load and window once it is",
			Note:   "Goals: 0 failed requests, p99 in the window ≤ steady p99 + 20 ms, drop to all healthy ≤ 5 s, bad-binary time-to-rollback ≤ 5 s."}}, nil
	}
	lod := report.Table{
		Title:   titleUpgradeLod,
		Subject: "lodis, bad binary",
		Peers:   []string{"lodis upgrade"},
		Rows: []report.Row{
			{Metric: "time to rollback: drop to all healthy on the old version", Unit: "s", Goal: report.Goal{Op: report.AtMost, Value: 5},
				Value: (rb.window[1] - rb.window[0]).Seconds(), Peers: []float64{(runs[0].window[1] - runs[0].window[0]).Seconds()}, Digits: 2},
			{Metric: "failed requests in the window", Goal: report.Goal{Op: report.AtMost, Value: 0},
				Value: float64(rb.inside.Failed), Peers: []float64{float64(runs[0].inside.Failed)}},
			{Metric: "p99 in the window minus steady p99", Unit: "ms", Goal: report.Goal{Op: report.AtMost, Value: 20},
				Value: ms(rb.inside.P99 - rb.steady.P99), Peers: []float64{ms(runs[0].inside.P99 - runs[0].steady.P99)}, Digits: 1},
		},
		Note: fmt.Sprintf("Bad binary: a build of this tree with the test fault `%s` (it passes validation, whose trial run checks its health at once, then its workers answer `/__/health` unhealthy after a second), dropped under the same load as table 4; the window runs from the drop until the roll-out has rolled back (`rollout.json`: %s, reason: %s) and every port answers from the previous binary again. From the start of the roll-out to the end of the rollback: %.2f s. The lodis upgrade column repeats table 4's good drop. Goal from the brief: time to rollback ≤ 5 s.",
			buildinfo.FaultUnhealthyAfter1s, rbState.Phase, oneLine(rbState.Reason), rbState.Finished.Sub(rbState.Started).Seconds()),
	}
	return []report.Table{t, lod}, nil
}

// failures prints a result's failures by class, e.g. "eof 3, reset 1", or
// "none".
func failures(r *load.Result) string {
	var out []string
	for _, c := range load.Classes {
		if n := r.Failures[c]; n > 0 {
			out = append(out, fmt.Sprintf("%s %d", c, n))
		}
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ", ")
}

// lodisTargets are the /__/time URLs of ports.
func lodisTargets(ports []int) []string {
	out := make([]string, len(ports))
	for i, p := range ports {
		out[i] = fmt.Sprintf("http://127.0.0.1:%d/__/time", p)
	}
	return out
}

// naiveRestart restarts the workers of 10 loaded ports one after another.
func (e *env) naiveRestart(ctx context.Context) (*upgradeRun, error) {
	ports := portRange(portUpgradeLodis, cohort)
	if err := e.enable(ctx, ports...); err != nil {
		return nil, err
	}
	defer e.disable(context.WithoutCancel(ctx), ports...)
	old := map[int]int{}
	for _, p := range ports {
		if err := waitServing(ctx, p, "/__/time", 10*time.Second); err != nil {
			return nil, err
		}
		h, err := testenv.Health(ctx, p)
		if err != nil {
			return nil, err
		}
		old[p] = h.PID
	}
	return e.underLoad(ctx, "systemctl restart", lodisTargets(ports), func(ctx context.Context) error {
		for _, p := range ports {
			if _, err := e.m.Systemctl(ctx, "restart", serviceUnit(p)); err != nil {
				return err
			}
		}
		return e.waitAll(ctx, ports, func(h health.Report, p int) bool { return h.PID != old[p] })
	})
}

// waitAll waits until every port's /__/health satisfies ok.
func (e *env) waitAll(ctx context.Context, ports []int, ok func(h health.Report, port int) bool) error {
	for _, p := range ports {
		err := testenv.Poll(ctx, healthyBound, 5*time.Millisecond, func() (bool, string) {
			h, err := testenv.Health(ctx, p)
			if err != nil {
				return false, err.Error()
			}
			return ok(h, p), fmt.Sprintf("port %d: pid %d, version %s, sha256 %.12s", p, h.PID, h.Version, h.SHA256)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// nginxUpgrade performs nginx's binary upgrade (USR2, WINCH, QUIT) of an
// nginx serving 10 loaded ports.
func (e *env) nginxUpgrade(ctx context.Context) (*upgradeRun, error) {
	ports := portRange(portUpgradeNginx, cohort)
	ng, err := e.startNginxDaemon(ctx, "upgrade", nginxHello(ports), ports[0])
	defer ng.stop(context.WithoutCancel(ctx), e)
	if err != nil {
		return nil, err
	}
	var targets []string
	for _, p := range ports {
		targets = append(targets, fmt.Sprintf("http://127.0.0.1:%d/", p))
	}
	return e.underLoad(ctx, "nginx binary upgrade", targets, func(ctx context.Context) error {
		old := ng.pidFile(ctx, e, "nginx.pid")
		if old == 0 {
			return errors.New("nginx: no pid file")
		}
		if err := e.signal(ctx, old, syscall.SIGUSR2); err != nil {
			return err
		}
		var cur int
		err := testenv.Poll(ctx, healthyBound, 5*time.Millisecond, func() (bool, string) {
			cur = ng.pidFile(ctx, e, "nginx.pid")
			return cur != 0 && cur != old && ng.pidFile(ctx, e, "nginx.pid.oldbin") == old, fmt.Sprintf("nginx.pid %d, old master %d", cur, old)
		})
		if err != nil {
			return fmt.Errorf("nginx: new master: %w", err)
		}
		if err := e.signal(ctx, old, syscall.SIGWINCH); err != nil {
			return err
		}
		err = testenv.Poll(ctx, healthyBound, 5*time.Millisecond, func() (bool, string) {
			// The new master is a child of the old one too.
			out, _ := e.m.Output(ctx, "pgrep", "-P", fmt.Sprint(old))
			var left []string
			for _, f := range strings.Fields(out) {
				if f != fmt.Sprint(cur) {
					left = append(left, f)
				}
			}
			return len(left) == 0, "old workers: " + strings.Join(left, " ")
		})
		if err != nil {
			return fmt.Errorf("nginx: old workers: %w", err)
		}
		if err := e.signal(ctx, old, syscall.SIGQUIT); err != nil {
			return err
		}
		err = testenv.Poll(ctx, healthyBound, 5*time.Millisecond, func() (bool, string) {
			return !e.alive(ctx, old), fmt.Sprintf("old master %d still running", old)
		})
		if err != nil {
			return fmt.Errorf("nginx: old master: %w", err)
		}
		if !e.alive(ctx, cur) {
			return fmt.Errorf("nginx: new master %d is gone", cur)
		}
		return nil
	})
}

// lodisUpgrade drops a new binary into /var/lib/lodis/incoming under load;
// the window ends when every port answers from the new binary (its sha256
// on /__/health). The roll-out runs as installed: default canary soak, and
// whatever /etc/lodis/app.conf says.
func (e *env) lodisUpgrade(ctx context.Context, name string, bin []byte, sum string) (*upgradeRun, *rollout.State, error) {
	ports := portRange(portUpgradeLodis, cohort)
	if err := e.enable(ctx, ports...); err != nil {
		return nil, nil, err
	}
	defer e.disable(context.WithoutCancel(ctx), ports...)
	if err := e.warm(ctx, ports); err != nil {
		return nil, nil, err
	}
	var dropped time.Time
	r, err := e.underLoad(ctx, name, lodisTargets(ports), func(ctx context.Context) error {
		dropped = time.Now()
		if err := e.drop(bin); err != nil {
			return err
		}
		if err := e.waitAll(ctx, ports, func(h health.Report, _ int) bool { return h.SHA256 == sum }); err != nil {
			return fmt.Errorf("%w; lodis-upgrade:\n%s", err, e.journal(ctx, "lodis-upgrade.service"))
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	st, err := e.rolloutSince(ctx, dropped)
	if err != nil {
		return nil, nil, err
	}
	r.soak = time.Duration(st.CanarySoak)
	if r.soak == 0 {
		r.soak = rollout.DefaultCanarySoak
	}
	return r, st, nil
}

// setAppConf writes /etc/lodis/app.conf (removes it for "") and reloads, so
// that the next roll-out follows it.
func (e *env) setAppConf(ctx context.Context, text string) error {
	path := filepath.Join(e.m.Root, "etc/lodis/app.conf")
	if text == "" {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	} else if err := e.m.WriteFile("/etc/lodis/app.conf", []byte(text), 0o644); err != nil {
		return err
	}
	_, err := e.m.Systemctl(ctx, "daemon-reload")
	return err
}

// rolloutSince waits for the roll-out started after t to finish and returns
// its state, from /var/lib/lodis/rollout.json.
func (e *env) rolloutSince(ctx context.Context, t time.Time) (*rollout.State, error) {
	store := rollout.NewStore(release.NewStore(filepath.Join(e.m.Root, release.DefaultRoot)))
	var st *rollout.State
	err := testenv.Poll(ctx, healthyBound, 5*time.Millisecond, func() (bool, string) {
		s, err := store.Load()
		if err != nil || s == nil {
			return false, fmt.Sprintf("rollout.json: %v", err)
		}
		st = s
		return s.Started.After(t.Add(-time.Second)) && s.Phase.Finished(), fmt.Sprintf("roll-out %s: %s", s.ID, s.Phase)
	})
	if err != nil {
		return nil, fmt.Errorf("%w; lodis-upgrade:\n%s", err, e.journal(ctx, "lodis-upgrade.service"))
	}
	return st, nil
}

// lodisRollback drops a binary that passes validation but whose workers
// report unhealthy once rolled out, under load; the window ends when the
// roll-out has rolled back and every port answers from the previous binary.
func (e *env) lodisRollback(ctx context.Context, bin []byte) (*upgradeRun, *rollout.State, error) {
	ports := portRange(portUpgradeLodis, cohort)
	if err := e.enable(ctx, ports...); err != nil {
		return nil, nil, err
	}
	defer e.disable(context.WithoutCancel(ctx), ports...)
	if err := e.warm(ctx, ports); err != nil {
		return nil, nil, err
	}
	before, err := testenv.Health(ctx, ports[0])
	if err != nil {
		return nil, nil, err
	}
	var st *rollout.State
	r, err := e.underLoad(ctx, "lodis rollback", lodisTargets(ports), func(ctx context.Context) error {
		dropped := time.Now()
		if err := e.drop(bin); err != nil {
			return err
		}
		var err error
		if st, err = e.rolloutSince(ctx, dropped); err != nil {
			return err
		}
		if st.Phase != rollout.PhaseRolledBack {
			return fmt.Errorf("the unhealthy binary was not rolled back: roll-out %s ended %s (%s)", st.ID, st.Phase, st.Reason)
		}
		return e.waitAll(ctx, ports, func(h health.Report, _ int) bool { return h.SHA256 == before.SHA256 })
	})
	return r, st, err
}

// warm starts the workers of ports, outside any measured window.
func (e *env) warm(ctx context.Context, ports []int) error {
	for _, p := range ports {
		if err := waitServing(ctx, p, "/__/time", 10*time.Second); err != nil {
			return err
		}
	}
	return nil
}

// drop puts bin in /var/lib/lodis/incoming/lodis as documented: written
// aside, then renamed into place.
func (e *env) drop(bin []byte) error {
	incoming := filepath.Join(e.m.Root, "var/lib/lodis/incoming")
	tmp := filepath.Join(incoming, ".lodis.tmp")
	if err := os.WriteFile(tmp, bin, 0o755); err != nil {
		return fmt.Errorf("drop: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(incoming, "lodis")); err != nil {
		return fmt.Errorf("drop: %w", err)
	}
	return nil
}

// variants are the binaries the lodis upgrade runs drop.
type variants struct {
	good     []byte // this tree, stamped with another version
	goodSum  string // its sha256
	good2    []byte // the same with a third version
	good2Sum string
	bad      []byte // this tree with buildinfo.FaultUnhealthyAfter1s
}

// buildVariants builds the binaries of the lodis upgrade runs in the
// background (they take a while on a busy machine) and returns a function
// that waits for them.
func buildVariants(repo, dir string) func() (*variants, error) {
	type out struct {
		v   *variants
		err error
	}
	c := make(chan out, 1)
	go func() {
		v := &variants{}
		var err error
		if v.good, v.goodSum, err = buildVariant(repo, dir, testenv.Spec{Version: "bench-next"}); err == nil {
			v.good2, v.good2Sum, err = buildVariant(repo, dir, testenv.Spec{Version: "bench-next-2"})
		}
		if err == nil {
			v.bad, _, err = buildVariant(repo, dir, testenv.Spec{Version: "bench-unhealthy", Fault: buildinfo.FaultUnhealthyAfter1s})
		}
		c <- out{v, err}
	}()
	var once sync.Once
	var res out
	return func() (*variants, error) {
		once.Do(func() { res = <-c })
		return res.v, res.err
	}
}

// buildVariant builds lodis from repo as s says and returns the binary and
// its sha256.
func buildVariant(repo, dir string, s testenv.Spec) ([]byte, string, error) {
	path, err := testenv.Build(repo, dir, s)
	if err != nil {
		return nil, "", err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, "", fmt.Errorf("build lodis %s: %w", s.Version, err)
	}
	sum := sha256.Sum256(b)
	return b, hex.EncodeToString(sum[:]), nil
}
