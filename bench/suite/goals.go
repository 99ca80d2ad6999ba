package suite

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/lodis/lodis/bench/report"
)

// Keys of env.figures: what the stages measured that the goals table
// repeats.
const (
	figColdP50      = "cold hardened p50"
	figColdPlainP50 = "cold unhardened p50"
	figColdP99      = "cold hardened p99"
	figUpgradeP99   = "upgrade p99 minus steady"
	figUpgradeFail  = "upgrade failed"
	figUpgradeFast  = "upgrade window less soak"
	figNoOverlapP99 = "no-overlap p99 minus steady"
)

// goalsStage gathers the figures the other stages measured into the table
// of this round's goals, and adds the worker unit's systemd-analyze
// security exposure. It is not run when a stage it draws on was not.
func goalsStage(ctx context.Context, e *env) ([]report.Table, error) {
	for _, k := range []string{figColdP50, figColdPlainP50, figColdP99, figUpgradeP99, figUpgradeFail, figUpgradeFast, figNoOverlapP99} {
		if _, ok := e.figures[k]; !ok {
			return []report.Table{{Title: titleGoals, NotRun: "the cold and upgrade stages did not both run (--stages); this table repeats their figures"}}, nil
		}
	}
	if err := e.enable(ctx, portColdHardened); err != nil {
		return nil, err
	}
	defer e.disable(context.WithoutCancel(ctx), portColdHardened)
	out, _ := e.m.Output(ctx, "systemd-analyze", "security", "--no-pager", serviceUnit(portColdHardened))
	score, err := exposure(out)
	if err != nil {
		return nil, err
	}
	f := e.figures
	return []report.Table{{
		Title:   titleGoals,
		Subject: "lodis",
		Peers:   []string{"lodis, OVERLAP=no"},
		Rows: []report.Row{
			{Metric: "p99 in the roll-out window minus steady p99, 10 ports at 2,000 req/s", Unit: "ms", Goal: report.Goal{Op: report.AtMost, Value: 5},
				Value: f[figUpgradeP99], Peers: []float64{f[figNoOverlapP99]}, Digits: 1},
			{Metric: "failed requests during the roll-out (fixed-rate, never-retrying keep-alive client)", Goal: report.Goal{Op: report.AtMost, Value: 0},
				Value: f[figUpgradeFail], Peers: []float64{f[figUpgradeFail+" no-overlap"]}},
			{Metric: "drop to all ports healthy on the new release, less the canary soak", Unit: "s", Goal: report.Goal{Op: report.AtMost, Value: 2},
				Value: f[figUpgradeFast], Peers: []float64{f[figUpgradeFast+" no-overlap"]}, Digits: 2},
			{Metric: "cold first response: hardened p50 / unhardened p50", Goal: report.Goal{Op: report.AtMost, Value: 1.3},
				Value: f[figColdP50] / f[figColdPlainP50], Peers: []float64{f[figColdP50] / f[figColdPlainP50]}, Digits: 2},
			{Metric: "cold first response p99, hardened", Unit: "ms", Goal: report.Goal{Op: report.AtMost, Value: 40},
				Value: f[figColdP99], Peers: []float64{f[figColdP99]}, Digits: 1},
			{Metric: "systemd-analyze security of the worker", Goal: report.Goal{Op: report.AtMost, Value: 1.5},
				Value: score, Peers: []float64{score}, Digits: 1},
		},
		Note: "Each figure repeats the table it comes from (1 for the cold start, 4 for the roll-out; the OVERLAP=no column is table 4's run with the worker restarted in place, and repeats the lodis figures where OVERLAP does not apply). The exposure is `systemd-analyze security lodis@P.service` of the installed unit. The warm spare (a process holding every port's socket that answers while a port's worker starts) is not built, so it has no row.",
	}}, nil
}

// exposure reads the overall exposure level from systemd-analyze security's
// output ("→ Overall exposure level for lodis@18500.service: 1.3 OK 🙂").
func exposure(out string) (float64, error) {
	for _, l := range strings.Split(out, "\n") {
		if _, rest, ok := strings.Cut(l, "Overall exposure level for "); ok {
			if _, v, ok := strings.Cut(rest, ": "); ok {
				if f := strings.Fields(v); len(f) > 0 {
					if x, err := strconv.ParseFloat(f[0], 64); err == nil {
						return x, nil
					}
				}
			}
		}
	}
	return 0, fmt.Errorf("systemd-analyze security: no exposure level in %q", out)
}
