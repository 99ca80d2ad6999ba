// Package supervisor_test checks `lodis supervise` against a real systemd:
// one throwaway machine for the package, lodis installed as an operator
// would, the supervisor running as its unit. Ports 18200-18299.
package supervisor_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	event "github.com/lodis/lodis/internal/events"
	"github.com/lodis/lodis/internal/statusapi"

	"github.com/lodis/lodis/test/machine"
)

var m *machine.Machine

// Fast probing for the tests: a hung worker is found in about 2 s.
const supervisorDropIn = `[Service]
ExecStart=
ExecStart=/var/lib/lodis/current supervise --probe-interval 500ms --probe-timeout 400ms --probe-failures 3
`

func TestMain(mm *testing.M) {
	os.Exit(run(mm))
}

func run(mm *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var err error
	m, err = machine.Boot(ctx, machine.Options{Name: "lodis-sup-test"})
	if err != nil {
		fmt.Fprintln(os.Stderr, "test/supervisor: cannot boot a test systemd:", err)
		return 1
	}
	defer m.Close()
	if err := setup(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "test/supervisor: setup:", err, "(console:", m.LogPath()+")")
		return 1
	}
	code := mm.Run()
	if code != 0 {
		// What the supervisor and systemd said, for the post-mortem.
		out, err := m.Output(ctx, "journalctl", "--no-pager", "-o", "short-precise", "-n", "400")
		fmt.Fprintf(os.Stderr, "--- journal of the test machine (last 400 lines) ---\n%s\n%v\n", out, err)
	}
	return code
}

func setup(ctx context.Context) error {
	repo, err := machine.RepoRoot()
	if err != nil {
		return err
	}
	if err := m.InstallLodis(ctx, repo); err != nil {
		return err
	}
	if err := m.WriteFile("/etc/systemd/system/lodis-supervisor.service.d/test.conf", []byte(supervisorDropIn), 0o644); err != nil {
		return err
	}
	if _, err := m.Sh(ctx, "systemctl daemon-reload && systemctl enable --now lodis-supervisor.service"); err != nil {
		return err
	}
	return machine.WaitFor(ctx, 10*time.Second, func() (bool, string) {
		_, err := statusJSON(ctx)
		return err == nil, fmt.Sprint(err)
	})
}

// statusJSON runs `lodis status --json` inside the machine.
func statusJSON(ctx context.Context) (statusapi.Snapshot, error) {
	var s statusapi.Snapshot
	out, err := m.Output(ctx, "lodis", "status", "--json")
	if err != nil {
		return s, err
	}
	err = json.Unmarshal([]byte(out), &s)
	return s, err
}

func instance(s statusapi.Snapshot, port int) (statusapi.InstanceStatus, bool) {
	for _, in := range s.Instances {
		if in.Port == strconv.Itoa(port) {
			return in, true
		}
	}
	return statusapi.InstanceStatus{}, false
}

// events returns the supervisor's events about port (all when port is 0)
// with Seq > after.
func events(t testing.TB, port int, after uint64) []event.Event {
	t.Helper()
	out, err := m.Output(context.Background(), "curl", "-sf", "--unix-socket", statusapi.DefaultSocket,
		fmt.Sprintf("http://supervisor/v1/events?since=%d", after))
	if err != nil {
		t.Fatalf("read events: %v", err)
	}
	var all []event.Event
	if err := json.Unmarshal([]byte(out), &all); err != nil {
		t.Fatalf("decode events: %v: %s", err, out)
	}
	var ev []event.Event
	for _, e := range all {
		if port == 0 || e.Instance == strconv.Itoa(port) {
			ev = append(ev, e)
		}
	}
	return ev
}

func lastSeq(t testing.TB) uint64 {
	ev := events(t, 0, 0)
	if len(ev) == 0 {
		return 0
	}
	return ev[len(ev)-1].Seq
}

// waitEvent waits until an event about port after seq satisfies match.
func waitEvent(t testing.TB, port int, after uint64, timeout time.Duration, what string, match func(event.Event) bool) event.Event {
	t.Helper()
	var found event.Event
	err := machine.WaitFor(context.Background(), timeout, func() (bool, string) {
		ev := events(t, port, after)
		for _, e := range ev {
			if match(e) {
				found = e
				return true, ""
			}
		}
		return false, fmt.Sprintf("no %s among %d events: %s", what, len(ev), describe(ev))
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

func describe(ev []event.Event) string {
	var b strings.Builder
	for _, e := range ev {
		fmt.Fprintf(&b, "\n  #%d %s %s %s→%s %s %s: %s", e.Seq, e.Kind, e.Unit, e.From, e.To, e.Action, e.Result, e.Message)
	}
	return b.String()
}

// enable enables and starts lodis@port.socket (and writes a service drop-in
// first when dropIn is not ""); the instance is stopped and disabled when
// the test ends.
func enable(t *testing.T, port int, dropIn string) {
	t.Helper()
	ctx := context.Background()
	if dropIn != "" {
		path := fmt.Sprintf("/etc/systemd/system/lodis@%d.service.d/test.conf", port)
		if err := m.WriteFile(path, []byte(dropIn), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Systemctl(ctx, "daemon-reload"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m.Systemctl(ctx, "enable", "--now", fmt.Sprintf("lodis@%d.socket", port)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.Systemctl(ctx, "disable", "--now", fmt.Sprintf("lodis@%d.socket", port), fmt.Sprintf("lodis@%d.service", port))
		m.Systemctl(ctx, "reset-failed", fmt.Sprintf("lodis@%d.socket", port), fmt.Sprintf("lodis@%d.service", port))
		if dropIn != "" {
			m.Sh(ctx, fmt.Sprintf("rm -rf /etc/systemd/system/lodis@%d.service.d && systemctl daemon-reload", port))
		}
	})
}

// get sends one request to the port on loopback; it reports the worker pid
// from /__/health.
func health(port int, timeout time.Duration) (int, error) {
	c := &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/__/health", port))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var h struct {
		PID int `json:"pid"`
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("status %s", resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		return 0, err
	}
	return h.PID, nil
}

// refuses reports whether a TCP connect to the port is refused.
func refuses(port int) bool {
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 500*time.Millisecond)
	if err != nil {
		return true
	}
	c.Close()
	return false
}

func mainPID(ctx context.Context, unit string) int {
	n, _ := strconv.Atoi(m.Prop(ctx, unit, "MainPID"))
	return n
}
