package security

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lodis/lodis/internal/buildinfo"
	rel "github.com/lodis/lodis/internal/cmd/releases"
	"github.com/lodis/lodis/internal/statusapi"
	"github.com/lodis/lodis/internal/testenv"
)

const (
	store    = "/var/lib/lodis"
	incoming = store + "/incoming"
)

// status is `lodis status --json` inside the machine, as root.
func status(ctx context.Context) (statusapi.Snapshot, error) {
	var s statusapi.Snapshot
	var stdout, stderr bytes.Buffer
	c := m.Command(ctx, "lodis", "status", "--json")
	c.Stdout, c.Stderr = &stdout, &stderr
	if err := c.Run(); err != nil {
		return s, fmt.Errorf("lodis status --json: %w: %s", err, stderr.String())
	}
	out := stdout.String()
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		return s, fmt.Errorf("lodis status --json: %w: %s", err, out)
	}
	return s, nil
}

// instance is port's line of the supervisor's status.
func instance(t testing.TB, port int) statusapi.InstanceStatus {
	t.Helper()
	s, err := status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range s.Instances {
		if in.Port == strconv.Itoa(port) {
			return in
		}
	}
	t.Fatalf("port %d not in the supervisor's status", port)
	return statusapi.InstanceStatus{}
}

// releases is `lodis releases -json` inside the machine, as root.
func releases(t testing.TB) rel.Report {
	t.Helper()
	r, err := tryReleases()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func tryReleases() (rel.Report, error) {
	var r rel.Report
	var stdout, stderr bytes.Buffer
	c := m.Command(context.Background(), "lodis", "releases", "-json")
	c.Stdout, c.Stderr = &stdout, &stderr
	if err := c.Run(); err != nil {
		return r, fmt.Errorf("lodis releases -json: %w: %s", err, stderr.String())
	}
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		return r, fmt.Errorf("lodis releases -json: %w: %s", err, stdout.String())
	}
	return r, nil
}

// sha is the SHA-256 of the binary built as name.
func sha(t testing.TB, name string) string {
	t.Helper()
	s, err := buildinfo.FileSHA256(bins[name])
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// host is a path inside the machine as the host sees it.
func host(path string) string { return filepath.Join(m.Root, path) }

// drop puts the binary built as name in incoming/ by rename, as root.
func drop(t testing.TB, name string) {
	t.Helper()
	b, err := os.ReadFile(bins[name])
	if err != nil {
		t.Fatal(err)
	}
	dropBytes(t, "app", b, 0o755)
}

// dropBytes puts b in incoming/NAME by rename, as root.
func dropBytes(t testing.TB, name string, b []byte, mode os.FileMode) {
	t.Helper()
	tmp := host(incoming + "/." + name + ".tmp")
	if err := os.WriteFile(tmp, b, mode); err != nil {
		t.Fatal(err)
	}
	os.Chmod(tmp, mode)
	if err := os.Rename(tmp, host(incoming+"/"+name)); err != nil {
		t.Fatal(err)
	}
}

// upgradeRuns tells one run of lodis-upgrade.service from the next.
func upgradeRuns() string {
	return m.Prop(context.Background(), "lodis-upgrade.service", "InactiveEnterTimestampMonotonic")
}

// awaitUpgrade waits until lodis-upgrade.service has run since before (a
// value of upgradeRuns) and is idle with incoming/ empty.
func awaitUpgrade(t testing.TB, before string, timeout time.Duration) {
	t.Helper()
	var failing time.Time // since when runs fail with the drop left in incoming/
	err := testenv.WaitFor(context.Background(), timeout, func() (bool, string) {
		st := m.State(context.Background(), "lodis-upgrade.service")
		des, _ := os.ReadDir(host(incoming))
		now := upgradeRuns()
		desc := fmt.Sprintf("lodis-upgrade.service %s, finished at %s (before %s), %d entries in incoming/", st, now, before, len(des))
		done := now != before && len(des) == 0 && (st == "inactive/dead" || st == "failed/failed")
		switch {
		case now == before || len(des) == 0 || st != "failed/failed":
		case failing.IsZero():
			failing = time.Now()
		case time.Since(failing) > 10*time.Second:
			// Failing again and again on the same drop: it will not end.
			return true, desc
		}
		return done, desc
	})
	if err == nil && !failing.IsZero() && time.Since(failing) > 10*time.Second {
		err = fmt.Errorf("lodis-upgrade.service fails again and again with the drop left in incoming/")
	}
	if err != nil {
		t.Fatalf("upgrade did not finish: %v\n%s", err, journal("lodis-upgrade", 30))
	}
}

// dropGood drops the next good release and checks that it is rolled out:
// the suite goes on after whatever the test did.
func dropGood(t testing.TB) string {
	t.Helper()
	name := nextGood(t)
	runs := upgradeRuns()
	drop(t, name)
	awaitUpgrade(t, runs, 90*time.Second)
	if r := releases(t); r.Active != sha(t, name) {
		t.Fatalf("the good drop %s was not rolled out: active %.12s; last rejection %+v\n%s",
			name, r.Active, first(r.Rejected), journal("lodis-upgrade", 30))
	}
	return name
}

func first[T any](s []T) any {
	if len(s) == 0 {
		return nil
	}
	return s[0]
}

// journal is the last n lines of unit's journal.
func journal(unit string, n int) string {
	out, _ := m.Output(context.Background(), "journalctl", "-u", unit, "-n", strconv.Itoa(n), "--no-pager", "-o", "cat")
	return out
}

// journalSince is unit's journal since t.
func journalSince(unit string, t time.Time) string {
	out, _ := m.Output(context.Background(), "journalctl", "-u", unit, "--no-pager", "-o", "cat",
		"--since", "@"+strconv.FormatInt(t.Unix(), 10))
	return out
}

// as runs argv inside the machine as user, through runuser: what that user
// could do from a shell. It returns the combined output and the error.
func as(user string, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return m.Output(ctx, append([]string{"runuser", "-u", user, "--"}, argv...)...)
}

// sh runs a shell script as root inside the machine; it fails the test on
// error.
func sh(t testing.TB, script string) string {
	t.Helper()
	out, err := m.Sh(context.Background(), script)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// api sends one request to the supervisor's status socket as user (curl
// --unix-socket), and returns the HTTP status ("000" when none) and body.
func api(t testing.TB, user, method, path, body string) (int, string) {
	t.Helper()
	argv := []string{"curl", "-s", "-m", "10", "-o", "/dev/stdout", "-w", "\n%{http_code}", "--unix-socket", statusapi.DefaultSocket,
		"-X", method, "http://supervisor" + path}
	if body != "" {
		argv = append(argv, "-H", "Content-Type: application/json", "--data-binary", body)
	}
	out, _ := as(user, argv...)
	out = strings.TrimRight(out, "\n")
	i := strings.LastIndexByte(out, '\n')
	code, err := strconv.Atoi(strings.TrimSpace(out[i+1:]))
	if err != nil {
		t.Fatalf("curl as %s: no HTTP status in %q", user, out)
	}
	return code, out[:max(i, 0)]
}

// get fetches url once, without keep-alive, from inside the test's network
// namespace.
func get(url string, timeout time.Duration) (int, error) {
	c := &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// serves reports whether addr answers its health path with 200 within timeout.
func serves(addr string, timeout time.Duration) bool {
	code, err := get("http://"+addr+"/__/health", timeout)
	return err == nil && code == http.StatusOK
}

func loopback(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// mainPID is a unit's main process as the machine sees it; 0 when none.
func mainPID(unit string) int {
	n, _ := strconv.Atoi(m.Prop(context.Background(), unit, "MainPID"))
	return n
}

// stopWorkers stops every worker of every port, so that a roll-out moves
// only the ones a test starts.
func stopWorkers(t testing.TB) {
	t.Helper()
	sh(t, "systemctl stop 'lodis@*.service' 'lodis-alt@*.service'")
}

func itoa(n int) string { return strconv.Itoa(n) }
