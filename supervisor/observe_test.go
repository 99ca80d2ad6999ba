package supervisor

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lodis/lodis/internal/metrics"
	"github.com/lodis/lodis/internal/sockets"
	"github.com/lodis/lodis/internal/systemd"
)

// exposition is the supervisor's metrics as Prometheus reads them.
func (h *harness) exposition() string { return h.sup.o.Metrics.Text() }

// waitMetrics waits until the exposition has every line of want.
func (h *harness) waitMetrics(what string, want ...string) string {
	h.t.Helper()
	var text string
	deadline := time.Now().Add(10 * time.Second)
	for {
		text = h.exposition()
		lines := strings.Split(text, "\n")
		if !slices.ContainsFunc(want, func(w string) bool { return !slices.Contains(lines, w) }) {
			return text
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%s: the exposition lacks some of\n  %s\nit has:\n%s\nevents:%s", what, strings.Join(want, "\n  "), lodisLines(text), h.describe())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func lodisLines(text string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, "lodis_") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func usec(t time.Time) uint64 { return uint64(t.UnixMicro()) }

// start sends the signals systemd sends for a worker start: activating
// (with the start's time), then active/running with its pid and the time it
// became ready.
func start(f *fakeConn, port string, pid uint32, at time.Time, ready time.Duration) {
	f.sigs <- propsSignal(systemd.ServiceUnit(port), "org.freedesktop.systemd1.Unit", map[string]any{
		"ActiveState": "activating", "SubState": "start", "InactiveExitTimestamp": usec(at)})
	f.sigs <- propsSignal(systemd.ServiceUnit(port), "org.freedesktop.systemd1.Service", map[string]any{"MainPID": pid})
	f.sigs <- propsSignal(systemd.ServiceUnit(port), "org.freedesktop.systemd1.Unit", map[string]any{
		"ActiveState": "active", "SubState": "running", "ActiveEnterTimestamp": usec(at.Add(ready))})
}

// TestMetricsFollowTheState: a port's series as the supervisor sees it go
// through a cold start, health probes, traffic, a crash and its remedy, and
// the port's removal, after which none is left.
func TestMetricsFollowTheState(t *testing.T) {
	var reqs atomic.Uint64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"pid":31,"version":"v3","sha256":"cc33","requests":%d,"open_conns":2}`, reqs.Add(5))
	}))
	defer srv.Close()
	counts := func(map[string]bool) (map[string]sockets.Counts, error) {
		return map[string]sockets.Counts{"8092": {Established: 2, Listeners: []sockets.Listener{{Addr: "[::]:8092", Queue: 3, Backlog: 4096}}}}, nil
	}
	f := newFake(socketState("8092", "active", "listening", "success"), serviceState("8092", "inactive", "dead", "success", 0))
	f.listen[systemd.SocketUnit("8092")] = srv.Listener.Addr().String()
	h := startHarness(t, Options{ProbeInterval: 50 * time.Millisecond, Sockets: counts}, f)
	h.waitMetrics("watching",
		`lodis_socket_state{port="8092",state="active"} 1`,
		`lodis_worker_state{port="8092",state="inactive"} 1`,
		`lodis_worker_failures_total{port="8092"} 0`,
		`lodis_remedies_total{kind="reset-failed",port="8092",result="done"} 0`)

	start(f, "8092", 31, time.Now(), 40*time.Millisecond)
	text := h.waitMetrics("a worker started",
		`lodis_worker_state{port="8092",state="active"} 1`,
		`lodis_worker_state{port="8092",state="inactive"} 0`,
		`lodis_activation_ready_seconds_count{port="8092"} 1`,
		`lodis_activation_ready_seconds_sum{port="8092"} 0.04`,
		`lodis_worker_release_info{port="8092",sha256="cc33",version="v3"} 1`,
		`lodis_connections{port="8092"} 2`,
		`lodis_accept_queue_length{listen="[::]:8092",port="8092"} 3`,
		`lodis_accept_queue_max{listen="[::]:8092",port="8092"} 4096`)
	if !regexp.MustCompile(`(?m)^lodis_health_probe_duration_seconds_count\{port="8092",result="ok"\} [1-9]`).MatchString(text) {
		t.Errorf("no ok probe counted:\n%s", lodisLines(text))
	}
	// Requests are the sum of the reports' differences: 5 per answer here.
	h.waitFor("requests counted", func() bool {
		m := regexp.MustCompile(`(?m)^lodis_app_requests_total\{port="8092"\} (\d+)$`).FindStringSubmatch(h.exposition())
		if m == nil {
			return false
		}
		n, _ := strconv.Atoi(m[1])
		return n >= 10 && uint64(n) <= reqs.Load() && n%5 == 0
	})

	// kill -9: failed, counted once; the reset is a remedy done.
	f.sigs <- propsSignal(systemd.ServiceUnit("8092"), "org.freedesktop.systemd1.Service", map[string]any{"Result": "signal", "MainPID": uint32(0)})
	f.sigs <- unitSignal(systemd.ServiceUnit("8092"), "failed", "failed")
	text = h.waitMetrics("a crash",
		`lodis_worker_state{port="8092",state="failed"} 1`,
		`lodis_worker_failures_total{port="8092"} 1`,
		`lodis_remedies_total{kind="reset-failed",port="8092",result="done"} 1`)
	// An exposition is not one instant (collectors are gathered
	// concurrently): the release's series goes by the next one.
	h.waitFor("no release series once no worker runs", func() bool {
		return !strings.Contains(h.exposition(), "lodis_worker_release_info{")
	})
	// The second start of a new process is a second cold start.
	start(f, "8092", 32, time.Now(), 10*time.Millisecond)
	h.waitMetrics("a second start", `lodis_activation_ready_seconds_count{port="8092"} 2`, `lodis_activation_ready_seconds_sum{port="8092"} 0.05`)

	// The units are gone: so are the port's series, once it is forgotten.
	f.sigs <- systemd.UnitChange{Unit: systemd.SocketUnit("8092"), Removed: true}
	f.sigs <- systemd.UnitChange{Unit: systemd.ServiceUnit("8092"), Removed: true}
	h.waitFor("the port's series gone", func() bool { return !strings.Contains(h.exposition(), `port="8092"`) })
}

// TestActivationOfAHealthReadyApp: an app with READY=health is ready when
// its first health probe answers, not when systemd calls it active.
func TestActivationOfAHealthReadyApp(t *testing.T) {
	const delay = 150 * time.Millisecond
	var first atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !first.Swap(true) {
			time.Sleep(delay) // starting up: the connection waits in the accept queue
		}
		fmt.Fprint(w, "ok")
	}))
	defer srv.Close()
	svc := serviceState("8093", "inactive", "dead", "success", 0)
	svc.Environment = []string{"LODIS_PORT=8093", "LODIS_READY=health"}
	f := newFake(socketState("8093", "active", "listening", "success"), svc)
	f.listen[systemd.SocketUnit("8093")] = srv.Listener.Addr().String()
	h := startHarness(t, Options{ProbeInterval: time.Hour, ProbeTimeout: 5 * time.Second}, f)
	h.waitMetrics("watching", `lodis_worker_state{port="8093",state="inactive"} 1`)
	start(f, "8093", 41, time.Now(), time.Millisecond) // Type=exec: active at once
	text := h.waitMetrics("ready", `lodis_activation_ready_seconds_count{port="8093"} 1`)
	m := regexp.MustCompile(`(?m)^lodis_activation_ready_seconds_sum\{port="8093"\} (.+)$`).FindStringSubmatch(text)
	if sum, err := strconv.ParseFloat(m[1], 64); err != nil || sum < delay.Seconds() || sum > 5 {
		t.Errorf("activation took %s s, want from %v (the app's start) to a few seconds", m[1], delay)
	}
	if strings.Contains(text, `lodis_app_requests_total{port="8093"}`) {
		t.Error("an app that reports no requests has a requests series")
	}
}

// TestRemedyKindsAreTheMetricsKinds: lodis_remedies_total is created at 0
// for exactly the supervisor's remedies.
func TestRemedyKindsAreTheMetricsKinds(t *testing.T) {
	var kinds []string
	for r := remedyNone + 1; r < nRemedies; r++ {
		if !slices.Contains(kinds, r.String()) { // an alternate worker's reset is a reset-failed too
			kinds = append(kinds, r.String())
		}
	}
	if !slices.Equal(kinds, metrics.RemedyKinds) {
		t.Fatalf("remedies %q, metrics.RemedyKinds %q", kinds, metrics.RemedyKinds)
	}
}
