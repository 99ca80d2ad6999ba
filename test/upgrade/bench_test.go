package upgrade

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lodis/lodis/bench/load"
	"github.com/lodis/lodis/rollout"
)

// The upgrade benchmark: 10 ports under a fixed 2,000 req/s over keep-alive
// connections (bench/load, which counts a request net/http had to re-send as
// failed, like a client that never retries).
//
//	lodis      drop a new build; roll-out with drain, one at a time
//	naive      the baseline: `systemctl restart` of each port in turn, workers
//	           started with a drain of 1 ms (no drain)
//	rollback   drop a build that fails its health check after the switch
//
// Reported per run: failed requests in the window, p99 in the window and the
// steady p99 in the 4 s before it, and the window itself (drop, or first
// restart, to every port healthy on the outcome). Run with
//
//	go test -run '^$' -bench Upgrade -benchtime 1x ./test/upgrade
const (
	benchRate   = 2000
	benchConns  = 40
	benchSteady = 4 * time.Second
	benchSoak   = "1s"
)

func benchTargets() []string {
	var t []string
	for i := range nPorts {
		t = append(t, fmt.Sprintf("http://127.0.0.1:%d/__/time", port(i)))
	}
	return t
}

// underLoad runs act while the ports are loaded, after benchSteady of steady
// load, and returns the load result and the offsets (from the load's start)
// of act's start and end.
func underLoad(b *testing.B, act func()) (*load.Result, time.Duration, time.Duration) {
	b.Helper()
	for i := range nPorts {
		if _, err := getHealth(port(i)); err != nil {
			b.Fatal(err)
		}
	}
	type out struct {
		res *load.Result
		err error
	}
	done := make(chan out, 1)
	start := time.Now()
	go func() {
		r, err := load.Run(context.Background(), load.Options{Targets: benchTargets(), Rate: benchRate,
			Duration: benchSteady + 25*time.Second, Conns: benchConns})
		done <- out{r, err}
	}()
	time.Sleep(benchSteady)
	from := time.Since(start)
	act()
	to := time.Since(start)
	o := <-done
	if o.err != nil {
		b.Fatal(o.err)
	}
	return o.res, from, to
}

func reportWindow(b *testing.B, name string, r *load.Result, from, to time.Duration) {
	b.Helper()
	// Align the load's own start (first request due) with ours.
	steady := r.Between(from-benchSteady+time.Second, from)
	win := r.Between(from, to)
	b.ReportMetric(float64(win.Failed), name+"-failed")
	b.ReportMetric(float64(steady.P99.Microseconds())/1000, name+"-steady-p99-ms")
	b.ReportMetric(float64(win.P99.Microseconds())/1000, name+"-window-p99-ms")
	b.ReportMetric((to - from).Seconds(), name+"-window-s")
	var classes []string
	for c, n := range r.Failures {
		classes = append(classes, fmt.Sprintf("%s=%d", c, n))
	}
	b.Logf("%-8s window %6.2fs  failed %5d of %6d (whole run: %d failed %v)  p99 steady %7.2fms  window %7.2fms  max %7.2fms",
		name, (to - from).Seconds(), win.Failed, win.Total, r.Failed, classes,
		float64(steady.P99.Microseconds())/1000, float64(win.P99.Microseconds())/1000, float64(win.Max.Microseconds())/1000)
}

func setSoak(b *testing.B, soak string) {
	b.Helper()
	if err := m.WriteFile("/etc/systemd/system/lodis-upgrade.service.d/test.conf",
		[]byte("[Service]\nExecStart=\nExecStart=/usr/bin/lodis upgrade --canary-soak "+soak+"\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	if _, err := m.Systemctl(context.Background(), "daemon-reload"); err != nil {
		b.Fatal(err)
	}
}

func BenchmarkUpgrade(b *testing.B) {
	setSoak(b, benchSoak)
	defer setSoak(b, "2s")
	for range b.N {
		// lodis: drop a new build.
		active := releases(b).Active
		next := "v2"
		if active == sha(b, "v2") {
			next = "v3"
		}
		res, from, to := underLoad(b, func() {
			runs := upgradeRuns(b)
			drop(b, bins[next], 0o755)
			awaitUpgrade(b, runs, 2*time.Minute)
		})
		if ro := lastRollout(b); ro == nil || ro.Phase != rollout.PhaseDone {
			b.Fatalf("roll-out did not finish: %+v", ro)
		}
		reportWindow(b, "lodis", res, from, to)

		// naive: plain restarts without drain.
		dropin := "/etc/systemd/system/lodis@.service.d/naive.conf"
		if err := m.WriteFile(dropin, []byte("[Service]\nExecStart=\nExecStart=/var/lib/lodis/current serve --port %i --drain-timeout 1ms --drain-idle-grace 1ms\n"), 0o644); err != nil {
			b.Fatal(err)
		}
		var restart []string
		for i := range nPorts {
			restart = append(restart, fmt.Sprintf("lodis@%d.service", port(i)))
		}
		ctx := context.Background()
		m.Systemctl(ctx, "daemon-reload")
		m.Systemctl(ctx, append([]string{"restart"}, restart...)...) // take the drop-in
		res, from, to = underLoad(b, func() {
			for _, u := range restart {
				if out, err := m.Systemctl(ctx, "restart", u); err != nil {
					b.Fatalf("%v: %s", err, out)
				}
			}
		})
		reportWindow(b, "naive", res, from, to)
		m.Sh(ctx, "rm -f "+dropin+" && systemctl daemon-reload && systemctl restart "+strings.Join(restart, " "))

		// rollback: a build that fails its health check after the switch.
		var dropAt time.Time
		res, from, to = underLoad(b, func() {
			runs := upgradeRuns(b)
			dropAt = time.Now()
			drop(b, bins["bench-unhealthy"], 0o755)
			awaitUpgrade(b, runs, 2*time.Minute)
		})
		ro := lastRollout(b)
		if ro == nil || ro.Phase != rollout.PhaseRolledBack {
			b.Fatalf("bad build not rolled back: %+v", ro)
		}
		reportWindow(b, "rollback", res, from, to)
		b.ReportMetric(ro.Finished.Sub(ro.Started).Seconds(), "rollback-flip-to-restored-s")
		b.ReportMetric(ro.Finished.Sub(dropAt).Seconds(), "rollback-drop-to-restored-s")
		b.Logf("time to rollback: %.2fs from the flip, %.2fs from the drop (settle 1 s and validation included)",
			ro.Finished.Sub(ro.Started).Seconds(), ro.Finished.Sub(dropAt).Seconds())
	}
}
