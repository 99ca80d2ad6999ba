package upgrade

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lodis/lodis/internal/load"
	"github.com/lodis/lodis/internal/release"
	"github.com/lodis/lodis/internal/rollout"
	"github.com/lodis/lodis/internal/systemd"
)

// connProbe is one new connection a connector made: whether it was
// answered, and how long the connect and the answer took.
type connProbe struct {
	at   time.Duration // since the connectors started
	took time.Duration
	err  error
}

// connectors open a new connection to each port every interval (GET / with
// Connection: close) until ctx ends or max probes per port were made, as a
// client arriving during a roll-out does: what keep-alive load never shows
// is a port whose new connections wait for a worker's start.
func connectors(ctx context.Context, ports []int, interval time.Duration, max int) func() map[int][]connProbe {
	start := time.Now()
	var mu sync.Mutex
	out := map[int][]connProbe{}
	var wg sync.WaitGroup
	for _, p := range ports {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(interval)
			defer t.Stop()
			for range max {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				at := time.Since(start)
				took, err := oneRequest(p)
				mu.Lock()
				out[p] = append(out[p], connProbe{at: at, took: took, err: err})
				mu.Unlock()
			}
		}()
	}
	return func() map[int][]connProbe { wg.Wait(); return out }
}

// oneRequest makes a new connection to port, sends GET / and reads the
// answer, within 5 s.
func oneRequest(port int) (time.Duration, error) {
	start := time.Now()
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(start.Add(5 * time.Second))
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return 0, fmt.Errorf("status %s", resp.Status)
	}
	return time.Since(start), nil
}

// portWorkers are the units that serve port now.
func portWorkers(t testing.TB, port int) []string {
	t.Helper()
	var out []string
	for _, u := range []string{systemd.ServiceUnit(fmt.Sprint(port)), systemd.AltUnit(fmt.Sprint(port))} {
		if m.State(context.Background(), u) == "active/running" {
			out = append(out, u)
		}
	}
	return out
}

// underLoad runs a fixed-rate keep-alive load (a client that never re-sends)
// on every port and the connectors while f runs, and returns both.
func underLoad(t *testing.T, ports []int, f func()) (*load.Result, map[int][]connProbe) {
	t.Helper()
	targets := make([]string, len(ports))
	for i, p := range ports {
		targets[i] = fmt.Sprintf("http://127.0.0.1:%d/", p)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan *load.Result, 1)
	go func() {
		r, _ := load.Run(ctx, load.Options{Targets: targets, Rate: 1000, Conns: 20, Duration: 2 * time.Minute})
		done <- r // cut short by cancel, which Run reports as its error
	}()
	probes := connectors(ctx, ports, 20*time.Millisecond, 6000)
	time.Sleep(2 * time.Second)
	f()
	time.Sleep(time.Second)
	cancel()
	res := <-done
	if res == nil {
		t.Fatal("the load did not run")
	}
	return res, probes()
}

// checkConnectors fails the test for every new connection that failed, and
// logs the slowest one of each 100 ms bucket's worst.
func checkConnectors(t *testing.T, probes map[int][]connProbe) {
	t.Helper()
	var n int
	var worst connProbe
	for p, ps := range probes {
		buckets := map[time.Duration]bool{}
		for _, c := range ps {
			n++
			if c.err != nil {
				buckets[c.at.Truncate(100*time.Millisecond)] = true
				continue
			}
			if c.took > worst.took {
				worst = c
			}
		}
		if len(buckets) > 0 {
			var at []string
			for b := range buckets {
				at = append(at, b.String())
			}
			slices.Sort(at)
			t.Errorf("port %d: new connections failed in %d bucket(s) of 100 ms, at %s", p, len(buckets), strings.Join(at, " "))
		}
	}
	if n < 100 {
		t.Errorf("only %d new connections made: the connectors did not run", n)
	}
	t.Logf("%d new connections, none refused; the slowest took %s (at %s)", n, worst.took.Round(time.Microsecond), worst.at.Round(time.Millisecond))
}

// TestRolloutOverlapsEveryPort: a roll-out of ten ports under a
// never-retrying keep-alive client and clients making a new connection to
// every port every 20 ms: no request fails, no port refuses a connection in
// any 100 ms, every port ends on the new release with one worker, and each
// port's new worker was started beside the old one (no restart in place).
func TestRolloutOverlapsEveryPort(t *testing.T) {
	ports := make([]int, nPorts)
	for i := range ports {
		ports[i] = port(i)
		mustHealth(t, ports[i])
	}
	want := sha(t, "v9")
	var dropAt, allAt time.Time
	res, probes := underLoad(t, ports, func() {
		runs := upgradeRuns(t)
		dropAt = time.Now()
		drop(t, bins["v9"], 0o755)
		awaitUpgrade(t, runs, 90*time.Second)
		allAt = time.Now()
	})
	ro := lastRollout(t)
	if ro == nil || ro.To != want || ro.Phase != rollout.PhaseDone {
		t.Fatalf("roll-out %+v, want done on v9", ro)
	}
	t.Logf("%d requests ok, %d failed; drop to all healthy %s (canary soak 2 s); roll-out %s; p99 %s",
		res.OK, res.Failed, allAt.Sub(dropAt).Round(time.Millisecond), ro.Finished.Sub(ro.Started).Round(time.Millisecond), res.P99)
	if res.Failed != 0 {
		t.Errorf("%d of %d requests failed during the roll-out: %v", res.Failed, res.Total, res.Failures)
	}
	checkConnectors(t, probes)
	var kinds []string
	var overlap time.Duration
	started := map[string]time.Time{}
	for _, e := range ro.Events {
		kinds = append(kinds, e.Kind)
		switch e.Kind {
		case "starting":
			started[systemd.PortOf(e.Unit)] = e.Time
		case "moved":
			if s, ok := started[systemd.PortOf(e.Unit)]; ok {
				overlap = max(overlap, e.Time.Sub(s))
			}
		}
	}
	if slices.Contains(kinds, "restarting") || strings.Count(strings.Join(kinds, " "), "starting ") < nPorts {
		t.Errorf("want every port's worker started beside the old one, no restart: %v", kinds)
	}
	t.Logf("longest start-to-moved of a port (new worker started, checked, old one drained): %s", overlap.Round(time.Millisecond))
	for _, p := range ports {
		ws := portWorkers(t, p)
		if len(ws) != 1 {
			t.Errorf("port %d is served by %v, want one worker", p, ws)
		}
		if h := mustHealth(t, p); h.SHA256 != want {
			t.Errorf("port %d runs %.12s, want v9 %.12s", p, h.SHA256, want)
		}
	}
}

// TestRollbackDuringOverlapLosesNothing: a new worker that starts but never
// answers its health check is stopped after the health timeout, while the
// old worker beside it serves on: every port keeps its worker process, the
// release is rejected, and no request fails.
func TestRollbackDuringOverlapLosesNothing(t *testing.T) {
	ctx := context.Background()
	ports := make([]int, nPorts)
	pids := map[int]string{}
	for i := range ports {
		ports[i] = port(i)
		mustHealth(t, ports[i])
		ws := portWorkers(t, ports[i])
		if len(ws) != 1 {
			t.Fatalf("port %d served by %v before the test", ports[i], ws)
		}
		pids[ports[i]] = ws[0] + " " + m.Prop(ctx, ws[0], "MainPID")
	}
	before := mustHealth(t, ports[0]).SHA256
	// Every worker started from now on hangs on its health check; the ones
	// that run are not touched.
	hang := "[Service]\nExecStart=\nExecStart=/usr/bin/lodis exec-app -- serve --port %i --test-hang-health\n"
	for _, tmpl := range []string{"lodis@.service", "lodis-alt@.service"} {
		if err := m.WriteFile("/etc/systemd/system/"+tmpl+".d/90-test-hang.conf", []byte(hang), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	defer func() {
		m.Sh(ctx, "rm -f /etc/systemd/system/lodis@.service.d/90-test-hang.conf /etc/systemd/system/lodis-alt@.service.d/90-test-hang.conf && systemctl daemon-reload")
	}()
	if _, err := m.Systemctl(ctx, "daemon-reload"); err != nil {
		t.Fatal(err)
	}
	res, probes := underLoad(t, ports, func() {
		runs := upgradeRuns(t)
		drop(t, bins["v10"], 0o755)
		awaitUpgrade(t, runs, 90*time.Second)
	})
	ro := lastRollout(t)
	if ro == nil || ro.To != sha(t, "v10") || ro.Phase != rollout.PhaseRolledBack {
		t.Fatalf("roll-out %+v, want rolled back", ro)
	}
	var kinds []string
	for _, e := range ro.Events {
		kinds = append(kinds, e.Kind)
	}
	if !slices.Contains(kinds, "discarding") || slices.Contains(kinds, "stopping") || slices.Contains(kinds, "restarting") {
		t.Errorf("want the new worker discarded and no old worker stopped or restarted: %v", kinds)
	}
	t.Logf("rolled back: %s; %d requests ok, %d failed", ro.Reason, res.OK, res.Failed)
	if res.Failed != 0 {
		t.Errorf("%d of %d requests failed: %v", res.Failed, res.Total, res.Failures)
	}
	checkConnectors(t, probes)
	for _, p := range ports {
		ws := portWorkers(t, p)
		if len(ws) != 1 || ws[0]+" "+m.Prop(ctx, ws[0], "MainPID") != pids[p] {
			t.Errorf("port %d served by %v, want %s untouched", p, ws, pids[p])
		}
		if h := mustHealth(t, p); h.SHA256 != before {
			t.Errorf("port %d runs %.12s after the rollback, want %.12s", p, h.SHA256, before)
		}
	}
	if r := releases(t); !slices.ContainsFunc(r.Rejected, func(x release.Rejection) bool { return x.SHA256 == sha(t, "v10") && x.Stage == "rollout" }) {
		t.Errorf("v10 is not rejected by its roll-out: %+v", r.Rejected)
	}
}
