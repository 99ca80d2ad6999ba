// Package observability tests what an operator watching lodis sees, against
// a real systemd: lodis-metrics.socket switched on (the one switch), a real
// Prometheus (Debian's) started by the test scraping it every second with
// the packaged alerting rules loaded, PromQL answering what a kill -9 and a
// roll-out did, and the status page read in a real headless Chromium (driven
// through ChromeDriver), which refreshes by itself and changes when a worker
// is killed. Ports 18900-18999; the metrics socket keeps its default,
// 127.0.0.1:9187, as shipped.
package observability

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lodis/lodis/internal/buildinfo"
	"github.com/lodis/lodis/internal/release"
	"github.com/lodis/lodis/internal/rollout"
	"github.com/lodis/lodis/internal/statusapi"
	"github.com/lodis/lodis/internal/systemd"
	"github.com/lodis/lodis/internal/testenv"
)

// Ports: 18910-18913 serve; Prometheus listens on 18990, ChromeDriver on
// 18992; 18991 and 18993 are where the address tests move the socket.
const (
	firstPort, nPorts = 18910, 4
	metricsAddr       = "127.0.0.1:9187"
	promAddr          = "127.0.0.1:18990"
	movedAddr         = "127.0.0.1:18991"
	driverPort        = 18992
)

var (
	m    *testenv.Machine
	repo string
	v2   string // a lodis build of another version, to roll out
	prom *prometheus
)

func TestMain(tm *testing.M) {
	testenv.Exit("test/observability", func() (int, error) { return run(tm) })
}

func run(tm *testing.M) (int, error) {
	for _, tool := range []string{"prometheus", "promtool", "chromium", "chromedriver"} {
		if _, err := exec.LookPath(tool); err != nil {
			return 1, fmt.Errorf("%s not found: run test/deps.sh (Debian: prometheus, chromium, chromium-driver)", tool)
		}
	}
	var dir string
	var err error
	if repo, dir, err = testenv.Workspace("lodis-obs-"); err != nil {
		return 1, err
	}
	defer os.RemoveAll(dir)
	if v2, err = testenv.Build(repo, dir, testenv.Spec{Version: "obs-v2"}); err != nil {
		return 1, err
	}
	defer func() {
		if prom != nil {
			prom.stop()
		}
	}()
	return testenv.Main(tm, testenv.Suite{
		// bpf(2) allowed: systemd enforces IPAddressAllow=/IPAddressDeny= in
		// the machine, as on a host.
		Machine:      testenv.Options{Name: "lodis-obs-test", SystemCallFilter: []string{"bpf"}},
		SetupTimeout: 3 * time.Minute,
		Journal:      []string{"lodis-supervisor", "lodis-metrics", "lodis-upgrade"},
	}, func(ctx context.Context, mc *testenv.Machine) error { return setup(ctx, mc, dir) }), nil
}

func setup(ctx context.Context, mc *testenv.Machine, dir string) error {
	m = mc
	if err := m.WriteFile(testenv.SupervisorDropIn, []byte(testenv.FastProbing), 0o644); err != nil {
		return err
	}
	if err := m.WriteFile(testenv.UpgradeDropIn, []byte(testenv.ShortSoak), 0o644); err != nil {
		return err
	}
	units := "lodis-upgrade.path lodis-supervisor.service"
	for p := firstPort; p < firstPort+nPorts; p++ {
		units += fmt.Sprintf(" lodis@%d.socket", p)
	}
	if _, err := m.Sh(ctx, "systemctl daemon-reload && systemctl enable --now "+units); err != nil {
		return err
	}
	// The one switch.
	if _, err := m.Systemctl(ctx, "enable", "--now", "lodis-metrics.socket"); err != nil {
		return err
	}
	if err := testenv.WaitFor(ctx, 20*time.Second, func() (bool, string) {
		code, body, err := get("http://" + metricsAddr + "/metrics")
		return err == nil && code == 200 && strings.Contains(body, "lodis_bus_connected 1"), fmt.Sprintf("%d %v %.200s", code, err, body)
	}); err != nil {
		return fmt.Errorf("GET %s/metrics: %w", metricsAddr, err)
	}
	var err error
	prom, err = startPrometheus(ctx, dir)
	return err
}

// get fetches url from the host (the machine shares its network).
func get(url string) (int, string, error) {
	resp, err := testenv.Client.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func port(i int) int { return firstPort + i }

// startWorker makes port's worker run (one health request) and returns its
// pid, as the machine sees it.
func startWorker(t testing.TB, p int) int {
	t.Helper()
	ctx := context.Background()
	h, err := testenv.Health(ctx, p)
	if err != nil {
		t.Fatalf("port %d: %v", p, err)
	}
	// After an overlapping roll-out the port's worker may be either unit.
	for _, u := range []string{systemd.ServiceUnit(fmt.Sprint(p)), systemd.AltUnit(fmt.Sprint(p))} {
		if pid := m.MainPID(ctx, u); pid != 0 && pid == h.PID {
			return pid
		}
	}
	t.Fatalf("port %d answered from pid %d, the main process of neither of its worker units", p, h.PID)
	return 0
}

// kill9 kills process pid inside the machine with SIGKILL.
func kill9(t testing.TB, pid int) {
	t.Helper()
	if _, err := m.Output(context.Background(), "kill", "-9", fmt.Sprint(pid)); err != nil {
		t.Fatal(err)
	}
}

// status is `lodis status --json` inside the machine.
func status(t testing.TB) statusapi.Snapshot {
	t.Helper()
	var s statusapi.Snapshot
	out, err := m.Output(context.Background(), "lodis", "status", "--json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("lodis status --json: %v: %s", err, out)
	}
	return s
}

// persisted is the roll-out in rollout.json, read from the host side.
func persisted(t testing.TB) *rollout.State {
	t.Helper()
	st, err := rollout.NewStore(release.NewStore(filepath.Join(m.Root, release.DefaultRoot))).Load()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// drop puts a file in /var/lib/lodis/incoming by rename, as `lodis drop` does.
func drop(t testing.TB, data []byte, name string) {
	t.Helper()
	dir := filepath.Join(m.Root, release.DefaultRoot, "incoming")
	tmp := filepath.Join(dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

func fileSHA(t testing.TB, path string) string {
	t.Helper()
	s, err := buildinfo.FileSHA256(path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// installedSHA is the sha256 of the lodis installed in the machine.
func installedSHA(t testing.TB) string { return fileSHA(t, filepath.Join(m.Root, "usr/bin/lodis")) }

// stopProcess ends a process the test started: SIGTERM, then SIGKILL.
func stopProcess(c *exec.Cmd, done <-chan error) {
	if c.Process == nil {
		return
	}
	c.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		c.Process.Kill()
		<-done
	}
}

// within reports the elapsed time since start, rounded for a log line.
func within(start time.Time) time.Duration { return time.Since(start).Round(10 * time.Millisecond) }

func jsonDecode(s string, v any) error {
	if err := json.Unmarshal([]byte(s), v); err != nil {
		return fmt.Errorf("decode %.200s: %w", s, err)
	}
	return nil
}
