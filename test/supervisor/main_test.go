// Package supervisor_test checks `lodis supervise` against a real systemd:
// one throwaway machine for the package, lodis installed as an operator
// would, the supervisor running as its unit. Ports 18200-18299.
package supervisor_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	event "github.com/lodis/lodis/internal/events"
	"github.com/lodis/lodis/internal/statusapi"

	"github.com/lodis/lodis/internal/testenv"
)

var m *testenv.Machine

func TestMain(mm *testing.M) {
	os.Exit(testenv.Main(mm, testenv.Suite{Machine: testenv.Options{Name: "lodis-sup-test"}}, setup))
}

func setup(ctx context.Context, mc *testenv.Machine) error {
	m = mc
	if err := m.WriteFile(testenv.SupervisorDropIn, []byte(testenv.FastProbing), 0o644); err != nil {
		return err
	}
	if _, err := m.Sh(ctx, "systemctl daemon-reload && systemctl enable --now lodis-supervisor.service"); err != nil {
		return err
	}
	return testenv.WaitFor(ctx, 10*time.Second, func() (bool, string) {
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
	err := testenv.WaitFor(context.Background(), timeout, func() (bool, string) {
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

// health sends one request to the port's /__/health on loopback, waiting at
// most timeout; it reports the worker's pid.
func health(port int, timeout time.Duration) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	h, err := testenv.Health(ctx, port)
	return h.PID, err
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
