package observability

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lodis/lodis/internal/events"
	"github.com/lodis/lodis/internal/testenv"
)

// request sends one request to the metrics endpoint at addr.
func request(t testing.TB, method, addr, path string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+addr+path, strings.NewReader(`{"who":"tcp","seconds":600}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := testenv.Client.Do(req)
	if err != nil {
		t.Fatalf("%s %s%s: %v", method, addr, path, err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return resp.StatusCode, b.String()
}

// TestTCPIsReadOnly: over TCP only GET /metrics and GET / are served;
// nothing that changes state reaches the supervisor, whatever the method or
// path. The proxy runs under a user of its own, in group lodis.
func TestTCPIsReadOnly(t *testing.T) {
	ctx := context.Background()
	seq := uint64(0)
	if ev := status(t); ev.PID == 0 {
		t.Fatal("no supervisor")
	}
	for _, e := range supervisorEvents(t) {
		seq = max(seq, e.Seq)
	}
	for _, c := range []struct {
		method, path string
		code         int
	}{
		{"POST", "/v1/hold", 404}, {"DELETE", "/v1/hold", 404}, {"POST", "/v1/rollout", 404},
		{"GET", "/v1/instances", 404}, {"GET", "/v1/events", 404}, {"GET", "/v1/rollout", 404},
		{"POST", "/metrics", 405}, {"PUT", "/", 405}, {"DELETE", "/metrics", 405}, {"PATCH", "/", 405},
		{"GET", "/metrics", 200}, {"HEAD", "/", 200},
	} {
		if code, body := request(t, c.method, metricsAddr, c.path); code != c.code {
			t.Errorf("%s %s over TCP: %d %.200q, want %d", c.method, c.path, code, body, c.code)
		}
	}
	for _, e := range supervisorEvents(t) {
		if e.Seq > seq && e.Kind == events.KindSupervisor && (e.Action == "hold" || e.Action == "resume") {
			t.Errorf("a request over TCP moved the supervisor: %+v", e)
		}
	}
	// Who the proxy is: a user of its own (never the supervisor's), group lodis.
	pid := m.MainPID(ctx, "lodis-metrics.service")
	out, err := m.Output(ctx, "sh", "-c", fmt.Sprintf("grep -E '^(Uid|Gid):' /proc/%d/status; id -u lodis; getent group lodis | cut -d: -f3", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(out)
	// Uid: r e s fs / Gid: r e s fs / uid of lodis / gid of lodis
	if len(f) != 12 || f[1] == f[10] || f[1] == "0" || f[6] != f[11] {
		t.Errorf("lodis-metrics.service runs as uid %v gid %v; want a uid other than root's and lodis's (%s), gid lodis (%s)", f[1:5], f[6:10], f[10], f[11])
	}
}

// supervisorEvents are the events in the supervisor's ring, read over its
// unix socket as root.
func supervisorEvents(t testing.TB) []events.Event {
	t.Helper()
	var ev []events.Event
	out, err := m.Output(context.Background(), "curl", "-sf", "--unix-socket", "/run/lodis/supervisor.sock", "http://supervisor/v1/events")
	if err != nil {
		t.Fatal(err)
	}
	if err := jsonDecode(out, &ev); err != nil {
		t.Fatal(err)
	}
	return ev
}

// TestSupervisorDownIsSeen: with the supervisor stopped the endpoint
// answers 503 and the page says so; Prometheus records the target down
// (what LodisSupervisorDown fires on), and up again once it runs.
func TestSupervisorDownIsSeen(t *testing.T) {
	ctx := context.Background()
	if _, err := m.Systemctl(ctx, "stop", "lodis-supervisor.service"); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	t.Cleanup(func() { m.Systemctl(ctx, "start", "lodis-supervisor.service") })
	if code, body := request(t, "GET", metricsAddr, "/metrics"); code != 503 || !strings.Contains(body, "does not answer") {
		t.Errorf("GET /metrics with the supervisor stopped: %d %q", code, body)
	}
	if code, body := request(t, "GET", metricsAddr, "/"); code != 503 || !strings.Contains(body, "The supervisor does not answer") {
		t.Errorf("GET / with the supervisor stopped: %d %.300q", code, body)
	}
	_, took := prom.waitQuery(t, 20*time.Second, `up{job="lodis"} == 0`, func(s []sample) bool { return len(s) == 1 })
	t.Logf("Prometheus saw the target down %v after the supervisor stopped", within(stopped))
	_ = took
	if _, err := m.Systemctl(ctx, "start", "lodis-supervisor.service"); err != nil {
		t.Fatal(err)
	}
	prom.waitQuery(t, 30*time.Second, `up{job="lodis"}`, one(1))
	prom.waitQuery(t, 10*time.Second, `lodis_bus_connected`, one(1))
}

// TestMetricsAddressIsSettable: a drop-in moves the socket to another
// address; on an address inside a network namespace the test creates
// (10.77.90.1, no loopback) a scraper is served, while the supervisor's own
// allow list (IPAddressAllow=localhost) would refuse it, proven by a
// transient unit with that list.
func TestMetricsAddressIsSettable(t *testing.T) {
	ctx := context.Background()
	const dropIn = "/etc/systemd/system/lodis-metrics.socket.d/listen.conf"
	move := func(conf string) {
		t.Helper()
		if conf == "" {
			os.Remove(m.Root + dropIn)
		} else if err := m.WriteFile(dropIn, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Sh(ctx, "systemctl daemon-reload && systemctl restart lodis-metrics.socket"); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		move("")
		m.Sh(ctx, "ip netns delete lodisobs || true")
	})

	move("[Socket]\nListenStream=\nListenStream=" + movedAddr + "\n")
	if code, body := request(t, "GET", movedAddr, "/metrics"); code != 200 || !strings.Contains(body, "lodis_bus_connected 1") {
		t.Errorf("GET %s/metrics: %d %.200q", movedAddr, code, body)
	}
	if c, err := net.DialTimeout("tcp", metricsAddr, time.Second); err == nil {
		c.Close()
		t.Errorf("%s still answers after the socket moved to %s", metricsAddr, movedAddr)
	}

	// Another address: in a namespace of the test's own.
	const nsAddr = "10.77.90.1"
	if _, err := m.Sh(ctx, "ip netns add lodisobs && ip -n lodisobs link set lo up && ip -n lodisobs addr add "+nsAddr+"/32 dev lo"); err != nil {
		t.Fatal(err)
	}
	move(fmt.Sprintf("[Socket]\nNetworkNamespacePath=/run/netns/lodisobs\nListenStream=\nListenStream=%s:18993\n", nsAddr))
	scrape := fmt.Sprintf("curl -sS -o /dev/null -w '%%{http_code}' --max-time 5 http://%s:18993/metrics", nsAddr)
	if out, err := m.Sh(ctx, "ip netns exec lodisobs "+scrape); err != nil || strings.TrimSpace(out) != "200" {
		t.Errorf("a scraper at %s: %q %v, want 200", nsAddr, out, err)
	}
	// The supervisor's list would have refused that peer: the filter works here.
	out, err := m.Output(ctx, "systemd-run", "--wait", "--pipe", "--quiet", "-p", "NetworkNamespacePath=/run/netns/lodisobs",
		"-p", "IPAddressAllow=localhost", "-p", "IPAddressDeny=any", "sh", "-c", scrape)
	if err == nil && strings.TrimSpace(out) == "200" {
		t.Errorf("a unit allowed localhost only reached %s: the IP filter does not work here, so this test proves nothing", nsAddr)
	}
	t.Logf("with IPAddressAllow=localhost the same scrape fails: %v", strings.TrimSpace(out))
	move("")
	prom.waitQuery(t, 30*time.Second, `up{job="lodis"}`, one(1))
}

// TestMetricsUnitsHardened: lodis-metrics.socket and .service verify clean,
// and the proxy, exposed to the network, is hardened to an exposure of at
// most 2.0 in systemd-analyze security.
func TestMetricsUnitsHardened(t *testing.T) {
	ctx := context.Background()
	if out, err := m.Output(ctx, "systemd-analyze", "verify", "lodis-metrics.socket", "lodis-metrics.service"); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	out, _ := m.Output(ctx, "systemd-analyze", "security", "--no-pager", "lodis-metrics.service")
	mm := regexp.MustCompile(`Overall exposure level for lodis-metrics.service: ([0-9.]+)`).FindStringSubmatch(out)
	if mm == nil {
		t.Fatalf("no exposure level in:\n%s", out)
	}
	score, _ := strconv.ParseFloat(mm[1], 64)
	t.Logf("systemd-analyze security lodis-metrics.service: %.1f", score)
	if score > 2.0 {
		t.Errorf("exposure %.1f > 2.0:\n%s", score, out)
	}
}
