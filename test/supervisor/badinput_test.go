package supervisor_test

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/lodis/lodis/internal/testenv"
)

// runIn runs argv in the machine and returns its exit code, stdout and stderr.
func runIn(t *testing.T, argv ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr strings.Builder
	c := m.Command(context.Background(), argv...)
	c.Stdout, c.Stderr = &stdout, &stderr
	err := c.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s: %v", strings.Join(argv, " "), err)
	}
	return code, stdout.String(), stderr.String()
}

// oneLine asserts that s is a single line starting with prefix and
// containing want.
func oneLine(t *testing.T, s, prefix, want string) {
	t.Helper()
	s = strings.TrimRight(s, "\n")
	if strings.Contains(s, "\n") || !strings.HasPrefix(s, prefix) || !strings.Contains(s, want) {
		t.Errorf("want one line starting %q containing %q, got:\n%s", prefix, want, s)
	}
}

// transient starts `lodis supervise args…` as a transient unit (as root, so
// it talks to /run/systemd/private), stopped when the test ends.
func transient(t *testing.T, name string, args ...string) {
	t.Helper()
	ctx := context.Background()
	argv := append([]string{"systemd-run", "--unit=" + name, "--collect", "-p", "RuntimeDirectory=" + name,
		"/usr/bin/lodis", "supervise", "--status-group="}, args...)
	if _, err := m.Output(ctx, argv...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Systemctl(ctx, "stop", name+".service") })
}

func journal(name string) string {
	out, _ := m.Output(context.Background(), "journalctl", "--no-pager", "-o", "cat", "-u", name+".service")
	return out
}

func TestBadInput(t *testing.T) {
	ctx := context.Background()
	if err := m.WriteFile("/etc/lodis-test/noexec.sh", []byte("#!/bin/sh\nexit 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := m.WriteFile("/etc/lodis-test/hang.sh", []byte("#!/bin/sh\nexec sleep 60\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := m.WriteFile("/etc/lodis-test/fail.sh", []byte("#!/bin/sh\necho hook says no >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := m.WriteFile("/etc/lodis-test/record.sh", []byte("#!/bin/sh\nenv | grep ^LODIS_EVENT_ | sort >> /run/lodis-test-record/events\necho >> /run/lodis-test-record/events\n"), 0o755); err != nil {
		t.Fatal(err)
	}

	t.Run("unknown flag", func(t *testing.T) {
		code, _, stderr := runIn(t, "lodis", "supervise", "--bogus")
		if code != 2 {
			t.Errorf("exit %d, want 2", code)
		}
		oneLine(t, stderr, "lodis supervise: ", "-bogus")
		code, _, stderr = runIn(t, "lodis", "status", "--bogus")
		if code != 2 {
			t.Errorf("status: exit %d, want 2", code)
		}
		oneLine(t, stderr, "lodis status: ", "-bogus")
		code, _, stderr = runIn(t, "lodis", "supervise", "--probe-timeout", "10s", "--probe-interval", "1s")
		if code != 2 {
			t.Errorf("probe timeout above interval: exit %d, want 2", code)
		}
		oneLine(t, stderr, "lodis supervise: ", "-probe-timeout")
	})

	t.Run("unreadable hook", func(t *testing.T) {
		code, _, stderr := runIn(t, "lodis", "supervise", "--on-event", "/etc/lodis-test/missing.sh")
		if code != 2 {
			t.Errorf("missing hook: exit %d, want 2", code)
		}
		oneLine(t, stderr, "lodis supervise: ", "no such file")
		code, _, stderr = runIn(t, "lodis", "supervise", "--on-event", "/etc/lodis-test/noexec.sh")
		if code != 2 {
			t.Errorf("non-executable hook: exit %d, want 2", code)
		}
		oneLine(t, stderr, "lodis supervise: ", "not executable")
	})

	t.Run("hook that hangs or fails", func(t *testing.T) {
		transient(t, "lodis-test-hang", "--status-socket", "/run/lodis-test-hang/s.sock",
			"--on-event", "/etc/lodis-test/hang.sh", "--on-event-timeout", "1s")
		transient(t, "lodis-test-fail", "--status-socket", "/run/lodis-test-fail/s.sock",
			"--on-event", "/etc/lodis-test/fail.sh")
		transient(t, "lodis-test-record", "--status-socket", "/run/lodis-test-record/s.sock",
			"--on-event", "/etc/lodis-test/record.sh")
		err := testenv.WaitFor(ctx, 8*time.Second, func() (bool, string) {
			h, f := journal("lodis-test-hang"), journal("lodis-test-fail")
			return strings.Contains(h, "killed after 1s") && strings.Contains(f, "exit status 3"),
				"hang unit:\n" + h + "\nfail unit:\n" + f
		})
		if err != nil {
			t.Fatalf("hook failures not logged: %v", err)
		}
		if f := journal("lodis-test-fail"); !strings.Contains(f, "hook says no") {
			t.Errorf("the failing hook's output is not in the log:\n%s", f)
		}
		// Both supervisors still serve their status, and the first event
		// reached a working hook with its fields in the environment.
		for _, name := range []string{"lodis-test-hang", "lodis-test-fail"} {
			code, out, stderr := runIn(t, "lodis", "status", "--status-socket", "/run/"+name+"/s.sock")
			if code != 0 || !strings.Contains(out, "supervisor pid") || strings.Contains(stderr, "not reachable") {
				t.Errorf("%s does not answer after its hook failed: exit %d\n%s%s", name, code, out, stderr)
			}
		}
		err = testenv.WaitFor(ctx, 5*time.Second, func() (bool, string) {
			out, _ := m.Output(ctx, "cat", "/run/lodis-test-record/events")
			return strings.Contains(out, "LODIS_EVENT_KIND=supervisor") && strings.Contains(out, "LODIS_EVENT_SEQ=1\n"), out
		})
		if err != nil {
			t.Errorf("hook did not get the event in its environment: %v", err)
		}
	})

	t.Run("D-Bus unreachable", func(t *testing.T) {
		transient(t, "lodis-test-nobus", "--bus", "unix:path=/run/lodis-test-nothing", "--status-socket", "/run/lodis-test-nobus/s.sock")
		time.Sleep(4 * time.Second) // at least three connection attempts
		code, out, stderr := runIn(t, "lodis", "status", "--status-socket", "/run/lodis-test-nobus/s.sock")
		if code != 0 || !strings.Contains(out, "CANNOT REACH systemd") {
			t.Errorf("status of a supervisor without D-Bus: exit %d, want 0 and a clear note:\n%s%s", code, out, stderr)
		}
		if st := m.State(ctx, "lodis-test-nobus.service"); st != "active/running" {
			t.Errorf("supervisor without D-Bus is %s, want it running (it retries)", st)
		}
		if n := strings.Count(journal("lodis-test-nobus"), "cannot reach systemd"); n != 1 {
			t.Errorf("the outage was logged %d times, want once:\n%s", n, journal("lodis-test-nobus"))
		}
	})

	t.Run("status socket unreachable", func(t *testing.T) {
		const port = 18260
		enable(t, port, "")
		code, out, stderr := runIn(t, "lodis", "status", "--status-socket", "/run/lodis-test-none.sock")
		if code != 0 {
			t.Errorf("exit %d, want 0 (it falls back to systemd)", code)
		}
		oneLine(t, stderr, "lodis status: ", "supervisor not reachable at /run/lodis-test-none.sock")
		if !strings.Contains(out, fmt.Sprintf("%d  active/listening", port)) || !strings.Contains(out, "from systemd; supervisor not running") {
			t.Errorf("fallback table lacks port %d:\n%s", port, out)
		}
		code, _, stderr = runIn(t, "lodis", "status", "--status-socket", "/run/lodis-test-none.sock", "--bus", "unix:path=/run/lodis-test-nothing")
		if code != 1 {
			t.Errorf("neither supervisor nor D-Bus: exit %d, want 1", code)
		}
		if !strings.Contains(stderr, "systemd D-Bus unreachable") {
			t.Errorf("neither supervisor nor D-Bus: unclear message:\n%s", stderr)
		}
	})
}
