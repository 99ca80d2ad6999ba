// Package upgrade tests lodis upgrades against a real systemd: apps dropped
// in /var/lib/lodis/incoming are validated (file checks, signature, a trial
// run in the worker's sandbox), rejected with a reason or rolled out by
// root one worker at a time, with nothing lost, while the supervisor — the
// installed lodis, never a drop — holds its remedies and relays the steps.
// The app is lodis serve, the default. Ports 18300-18399.
package upgrade

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	rel "github.com/lodis/lodis/internal/cmd/releases"
	"github.com/lodis/lodis/internal/events"
	"github.com/lodis/lodis/internal/health"
	"github.com/lodis/lodis/internal/release"
	"github.com/lodis/lodis/internal/statusapi"

	"github.com/lodis/lodis/internal/buildinfo"
	"github.com/lodis/lodis/internal/rollout"
	"github.com/lodis/lodis/internal/testenv"
)

// Ports: 18300-18309 run workers for the roll-out tests.
const firstPort, nPorts = 18300, 10

var (
	m    *testenv.Machine
	bins map[string]string // name → path on the host
)

func TestMain(tm *testing.M) {
	testenv.Exit("test/upgrade", func() (int, error) { return run(tm) })
}

// run builds the binaries the tests drop, then boots the machine.
func run(tm *testing.M) (int, error) {
	repo, dir, err := testenv.Workspace("lodis-upgrade-bins-")
	if err != nil {
		return 1, err
	}
	defer os.RemoveAll(dir)
	if bins, err = testenv.BuildAll(repo, dir, map[string]testenv.Spec{
		"v2": {Version: "up-v2"}, "v3": {Version: "up-v3"}, "v4": {Version: "up-v4"}, "v5": {Version: "up-v5"},
		"v6": {Version: "up-v6"}, "v7": {Version: "up-v7"}, "v8": {Version: "up-v8"},
		"v9": {Version: "up-v9"}, "v10": {Version: "up-v10"},
		"exit-at-start":      {Version: "up-exit-at-start", Fault: buildinfo.FaultExitAtStart},
		"serve-unhealthy":    {Version: "up-unhealthy", Fault: buildinfo.FaultServeUnhealthy},
		"hang-health":        {Version: "up-hang-health", Fault: buildinfo.FaultHangHealth},
		"ignore-sigterm":     {Version: "up-ignore-sigterm", Fault: buildinfo.FaultIgnoreSIGTERM},
		"unhealthy-after-1s": {Version: "up-unhealthy-after-1s", Fault: buildinfo.FaultUnhealthyAfter1s},
		"arm64":              {Version: "up-arm64", GOARCH: "arm64"},
	}); err != nil {
		return 1, err
	}
	return testenv.Main(tm, testenv.Suite{
		Machine:      testenv.Options{Name: "lodis-upgrade-test"},
		SetupTimeout: 3 * time.Minute,
		Journal:      []string{"lodis-supervisor", "lodis-upgrade"},
	}, setup), nil
}

func setup(ctx context.Context, mc *testenv.Machine) error {
	m = mc
	// A shorter canary soak keeps the suite lean; the default is 5 s.
	if err := m.WriteFile(testenv.UpgradeDropIn, []byte(testenv.ShortSoak), 0o644); err != nil {
		return err
	}
	// Fast probing: a worker failing its probes would be restarted as hung
	// within the canary soak, were the supervisor's remedies not held.
	if err := m.WriteFile(testenv.SupervisorDropIn, []byte(testenv.FastProbing), 0o644); err != nil {
		return err
	}
	units := []string{"enable", "--now", "lodis-upgrade.path", "lodis-supervisor.service"}
	for p := firstPort; p < firstPort+nPorts; p++ {
		units = append(units, fmt.Sprintf("lodis@%d.socket", p))
	}
	if _, err := m.Sh(ctx, "systemctl daemon-reload && systemctl "+strings.Join(units, " ")); err != nil {
		return err
	}
	if err := testenv.WaitFor(ctx, 20*time.Second, func() (bool, string) {
		_, err := status(ctx)
		return err == nil, fmt.Sprint(err)
	}); err != nil {
		return fmt.Errorf("the supervisor's status API: %w", err)
	}
	return nil
}

// status is `lodis status --json` inside the machine.
func status(ctx context.Context) (statusapi.Snapshot, error) {
	var s statusapi.Snapshot
	out, err := m.Output(ctx, "lodis", "status", "--json")
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		return s, fmt.Errorf("lodis status --json: %w: %s", err, out)
	}
	return s, nil
}

// supervisorPID is the supervisor's main process, 0 when it does not run.
func supervisorPID(t testing.TB) int {
	return m.MainPID(context.Background(), "lodis-supervisor.service")
}

// exeSHA is the sha256 of the executable process pid runs, read through
// /proc/PID/exe inside the machine.
func exeSHA(t testing.TB, pid int) string {
	t.Helper()
	out, err := m.Output(context.Background(), "sha256sum", fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(out)[0]
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

// supervisorEvents are the events in the running supervisor's ring.
func supervisorEvents(t testing.TB) []events.Event {
	t.Helper()
	out, err := m.Output(context.Background(), "curl", "-sf", "--unix-socket", statusapi.DefaultSocket, "http://supervisor/v1/events")
	if err != nil {
		t.Fatalf("read events: %v", err)
	}
	var ev []events.Event
	if err := json.Unmarshal([]byte(out), &ev); err != nil {
		t.Fatalf("decode events: %v: %s", err, out)
	}
	return ev
}

// releases is `lodis releases -json` inside the machine.
func releases(t testing.TB) rel.Report {
	t.Helper()
	out, err := m.Output(context.Background(), "lodis", "releases", "-json")
	if err != nil {
		t.Fatal(err)
	}
	var r rel.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("lodis releases -json: %v: %s", err, out)
	}
	return r
}

func sha(t testing.TB, name string) string {
	t.Helper()
	s, err := buildinfo.FileSHA256(bins[name])
	if err != nil {
		t.Fatal(err)
	}
	return s
}

const incoming = "/var/lib/lodis/incoming"

// drop puts a binary in incoming/ by rename, the recommended way.
func drop(t testing.TB, src string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dropBytes(t, b, mode)
}

func dropBytes(t testing.TB, b []byte, mode os.FileMode) {
	t.Helper()
	tmp := filepath.Join(m.Root, incoming, ".lodis.tmp")
	if err := os.WriteFile(tmp, b, mode); err != nil {
		t.Fatal(err)
	}
	os.Chmod(tmp, mode)
	if err := os.Rename(tmp, filepath.Join(m.Root, incoming, "lodis")); err != nil {
		t.Fatal(err)
	}
}

// upgradeRuns is how many times lodis-upgrade.service has finished.
func upgradeRuns(t testing.TB) string {
	return m.Prop(context.Background(), "lodis-upgrade.service", "InactiveEnterTimestampMonotonic")
}

// awaitUpgrade waits until lodis-upgrade.service has run since before (a
// value of upgradeRuns) and is idle with nothing left in incoming/.
func awaitUpgrade(t testing.TB, before string, timeout time.Duration) {
	t.Helper()
	err := testenv.WaitFor(context.Background(), timeout, func() (bool, string) {
		st := m.State(context.Background(), "lodis-upgrade.service")
		_, err := os.Lstat(filepath.Join(m.Root, incoming, "lodis"))
		now := upgradeRuns(t)
		done := now != before && err != nil && (st == "inactive/dead" || st == "failed/failed")
		return done, fmt.Sprintf("lodis-upgrade.service %s, finished at %s (before %s), drop still there: %v", st, now, before, err == nil)
	})
	if err != nil {
		out, _ := m.Output(context.Background(), "journalctl", "-u", "lodis-upgrade", "-n", "30", "--no-pager", "-o", "cat")
		t.Fatalf("upgrade did not finish: %v\n%s", err, out)
	}
}

func mustHealth(t testing.TB, port int) health.Report {
	t.Helper()
	h, err := testenv.Health(context.Background(), port)
	if err != nil {
		t.Fatalf("port %d: %v", port, err)
	}
	return h
}

func port(i int) int { return firstPort + i }

// journalGrep returns lodis-upgrade's log lines since the given time that
// contain substr.
func journalGrep(t testing.TB, since time.Time, substr string) []string {
	return unitJournalGrep(t, "lodis-upgrade", since, substr)
}

// unitJournalGrep returns unit's log lines since the given time that
// contain substr.
func unitJournalGrep(t testing.TB, unit string, since time.Time, substr string) []string {
	t.Helper()
	out, err := m.Output(context.Background(), "journalctl", "-u", unit, "--no-pager", "-o", "cat",
		"--since", "@"+strconv.FormatInt(since.Unix(), 10))
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, substr) {
			lines = append(lines, l)
		}
	}
	return lines
}

func lastRollout(t testing.TB) *rollout.State { return releases(t).Rollout }

// installedSHA is the sha256 of the package's lodis, /usr/bin/lodis.
func installedSHA(t testing.TB) string {
	t.Helper()
	s, err := buildinfo.FileSHA256(filepath.Join(m.Root, "/usr/bin/lodis"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}
