package apps

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lodis/lodis/internal/load"
	"github.com/lodis/lodis/internal/systemd"
	"github.com/lodis/lodis/internal/testenv"
)

// lastLine is the last line of a command's output.
func lastLine(out string) string {
	out = strings.TrimSpace(out)
	return out[strings.LastIndex(out, "\n")+1:]
}

// get fetches path from port on loopback without keep-alive.
func get(port int, path string) (int, string, error) {
	resp, err := testenv.Client.Get(fmt.Sprintf("http://127.0.0.1:%d%s", port, path))
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

// TestDefaultAppNeedsNothingConfigured: with no /etc/lodis/app.conf the
// generator adds nothing and every port runs lodis serve through exec-app.
func TestDefaultAppNeedsNothingConfigured(t *testing.T) {
	ctx := context.Background()
	if dropins := m.Prop(ctx, unit(port(0)), "DropInPaths"); strings.Contains(dropins, "50-app.conf") {
		t.Errorf("a drop-in was generated without app.conf: %s", dropins)
	}
	if ex := m.Prop(ctx, unit(port(0)), "ExecStart"); !strings.Contains(ex, "/usr/bin/lodis ; argv[]=/usr/bin/lodis exec-app -- serve --port "+strconv.Itoa(port(0))) {
		t.Errorf("ExecStart %q, want lodis exec-app -- serve", ex)
	}
	for i := range nPorts {
		h, err := testenv.Health(ctx, port(i))
		if err != nil || h.Name != "lodis" || h.PID == 0 {
			t.Fatalf("port %d: %+v, %v; want lodis serve", port(i), h, err)
		}
	}
}

// TestHelloUnderLoad: examples/hello, built as its doc says, is dropped
// while ten ports take a fixed-rate keep-alive load (a client that never
// re-sends counts a reset as a failure): every port ends serving hello, no
// request fails, the supervisor stays the package's lodis, and lodis status
// shows hello's release.
func TestHelloUnderLoad(t *testing.T) {
	ctx := context.Background()
	targets := make([]string, nPorts)
	for i := range nPorts {
		targets[i] = fmt.Sprintf("http://127.0.0.1:%d/", port(i))
		testenv.Health(ctx, port(i)) // a worker runs on every port
	}
	sup := m.MainPID(ctx, "lodis-supervisor.service")
	installed := installedSHA(t)
	if got := exeSHA(t, sup); got != installed {
		t.Fatalf("the supervisor runs %.12s before the drop, want the package's lodis %.12s", got, installed)
	}
	stopLoad := load.Background(ctx, load.Options{Targets: targets, Rate: 800, Conns: 20, Duration: 3 * time.Minute})
	time.Sleep(2 * time.Second)
	start := time.Now()
	out, err := dropWait(t, hello, "hello")
	took := time.Since(start)
	time.Sleep(time.Second)
	res, lerr := stopLoad()
	if err != nil {
		t.Fatalf("lodis drop --wait hello: %v\n%s", err, out)
	}
	if res == nil {
		t.Fatalf("load: %v", lerr)
	}
	want := fileSHA(t, hello)
	t.Logf("hello rolled out over %d ports in %s (drop --wait); %d requests ok, %d failed; %s",
		nPorts, took.Round(time.Millisecond), res.OK, res.Failed, lastLine(out))
	if res.Failed != 0 {
		t.Errorf("%d of %d requests failed during the roll-out: %v", res.Failed, res.OK+res.Failed, res.Failures)
	}
	if res.OK < 2000 {
		t.Errorf("only %d requests answered: the load did not run", res.OK)
	}
	for i := range nPorts {
		code, body, err := get(port(i), "/")
		if err != nil || code != 200 || !strings.HasPrefix(body, "hello from pid") {
			t.Errorf("port %d: %d %q %v; want hello's page", port(i), code, body, err)
		}
	}
	if now := m.MainPID(ctx, "lodis-supervisor.service"); now != sup || exeSHA(t, now) != installed {
		t.Errorf("supervisor pid %d → %d: it must stay the package's lodis, untouched", sup, now)
	}
	err = testenv.WaitFor(ctx, 15*time.Second, func() (bool, string) {
		s, err := status(ctx)
		if err != nil {
			return false, err.Error()
		}
		for _, in := range s.Instances {
			if p, _ := strconv.Atoi(in.Port); p >= port(0) && p < port(nPorts) && in.Worker == "active/running" &&
				(in.SHA256 != want || in.Version != helloVersion) {
				return false, fmt.Sprintf("port %s shows %s %.12s", in.Port, in.Version, in.SHA256)
			}
		}
		return true, ""
	})
	if err != nil {
		t.Errorf("lodis status does not show hello's release on every port: %v", err)
	}
	table, _ := m.Output(ctx, "lodis", "status")
	if !strings.Contains(table, helloVersion+"  "+want[:12]) {
		t.Errorf("lodis status's table does not show hello %s:\n%s", want[:12], table)
	}
}

// TestBadAppConf: every kind of bad app.conf gets one clear line naming
// the file and the line, from `lodis config check` and in the journal at
// daemon-reload, and changes nothing: the workers that run keep running,
// and the next ones start with the last good settings.
func TestBadAppConf(t *testing.T) {
	ctx := context.Background()
	good := "# hello, as lodis runs it\nSTOP_TIMEOUT=10s\nHEALTH_TIMEOUT=3s\n"
	setAppConf(t, good)
	before := m.Prop(ctx, unit(port(0)), "TimeoutStopUSec")
	if before != "10s" {
		t.Fatalf("the good app.conf did not apply: TimeoutStopUSec=%s, want 10s", before)
	}
	pid := m.MainPID(ctx, unit(port(0)))
	for _, c := range []struct{ name, text, want string }{
		{"unknown key", good + "PORT=80\n", "app.conf:4: unknown key PORT"},
		{"bad value", "READY=maybe\n", "app.conf:1: READY=\"maybe\": want notify"},
		{"missing health path", "HEALTH_PATH=\n", "app.conf:1: HEALTH_PATH \"\": empty"},
		{"bad duration", "STOP_TIMEOUT=soon\n", "app.conf:1: STOP_TIMEOUT=\"soon\""},
	} {
		t.Run(c.name, func(t *testing.T) {
			since := time.Now()
			if err := m.WriteFile("/etc/lodis/app.conf", []byte(c.text), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := m.Output(ctx, "lodis", "config", "check")
			if err == nil || !strings.Contains(out, "/etc/lodis/"+c.want) || strings.Count(strings.TrimSpace(out), "\n") > 0 {
				t.Errorf("lodis config check: %v %q; want a failure and one line with %q", err, out, c.want)
			}
			if _, err := m.Systemctl(ctx, "daemon-reload"); err != nil {
				t.Fatal(err)
			}
			log, _ := m.Output(ctx, "journalctl", "--no-pager", "-o", "cat", "--since", "@"+strconv.FormatInt(since.Unix(), 10))
			if !strings.Contains(log, "lodis-generator: /etc/lodis/"+c.want) || !strings.Contains(log, "stay in force") {
				t.Errorf("the journal does not have the generator's line with %q:\n%s", c.want, log)
			}
			if got := m.Prop(ctx, unit(port(0)), "TimeoutStopUSec"); got != before {
				t.Errorf("TimeoutStopUSec %s after the bad app.conf, want the last good %s", got, before)
			}
			if now := m.MainPID(ctx, unit(port(0))); pid != 0 && now != pid {
				t.Errorf("the worker changed (pid %d → %d) after a bad app.conf", pid, now)
			}
		})
	}
	setAppConf(t, good)
}

// TestPythonApp: examples/python (no sd_notify, no idle exit, its socket
// from fd 3) with READY=health and IDLE_TIMEOUT=3s: dropped and rolled out,
// it answers on every port; a kill -9 of a worker is mended like any other;
// with no traffic its workers are stopped after the idle timeout (inactive,
// not failed) and the next request starts one.
func TestPythonApp(t *testing.T) {
	ctx := context.Background()
	setAppConf(t, "READY=health\nIDLE_TIMEOUT=3s\nSTOP_TIMEOUT=10s\n")
	if typ := m.Prop(ctx, unit(port(0)), "Type"); typ != "exec" {
		t.Fatalf("with READY=health the worker's Type= is %s, want exec", typ)
	}
	start := time.Now()
	out, err := dropWait(t, filepath.Join(repo, "examples/python/app.py"), "app.py")
	if err != nil {
		t.Fatalf("lodis drop --wait app.py: %v\n%s", err, out)
	}
	t.Logf("app.py rolled out in %s (drop --wait): %s", time.Since(start).Round(time.Millisecond), lastLine(out))
	// The port's listening socket is one open file shared by every worker
	// on it: it stays non-blocking whatever the app starting does with it,
	// or a Go worker beside a new one would block in accept(2) and never
	// drain.
	if pid := m.MainPID(ctx, unit(port(0))); pid != 0 {
		info, _ := m.Output(ctx, "cat", fmt.Sprintf("/proc/%d/fdinfo/3", pid))
		var flags int64
		for _, l := range strings.Split(info, "\n") {
			if v, ok := strings.CutPrefix(l, "flags:"); ok {
				flags, _ = strconv.ParseInt(strings.TrimSpace(v), 8, 64)
			}
		}
		if flags&0o4000 == 0 {
			t.Errorf("the Python worker's listening socket (fd 3) is blocking (fdinfo %q): a worker beside it could not drain", strings.TrimSpace(info))
		}
	}
	// The Go workers it replaced drained and exited by themselves: a worker
	// started beside them on the same socket left them able to (no stop
	// timed out, no SIGKILL).
	for i := range nPorts {
		for _, u := range []string{unit(port(i)), systemd.AltUnit(strconv.Itoa(port(i)))} {
			if r := m.Prop(ctx, u, "Result"); r != "success" {
				t.Errorf("%s ended with result %s, want success: the old worker did not drain", u, r)
			}
		}
	}
	want := fileSHA(t, filepath.Join(repo, "examples/python/app.py"))
	for i := range nPorts {
		code, body, err := get(port(i), "/")
		if err != nil || code != 200 || !strings.HasPrefix(body, "hello from Python") {
			t.Fatalf("port %d: %d %q %v; want the Python app's page", port(i), code, body, err)
		}
	}
	// Which release the worker runs is read from what it executes: the
	// interpreter, with the release's path as its script. (A request
	// first: with IDLE_TIMEOUT=3s the worker may have been stopped.)
	p := port(0)
	get(p, "/")
	pid := m.MainPID(ctx, unit(p))
	if cmd, _ := m.Output(ctx, "cat", fmt.Sprintf("/proc/%d/cmdline", pid)); !strings.Contains(cmd, "/var/lib/lodis/releases/"+want+"/app") {
		t.Errorf("the worker's command line %q does not name its release", cmd)
	}
	err = testenv.WaitFor(ctx, 15*time.Second, func() (bool, string) {
		get(p, "/")
		s, err := status(ctx)
		for _, in := range s.Instances {
			if in.Port == strconv.Itoa(p) {
				return err == nil && in.SHA256 == want, fmt.Sprintf("port %d shows %.12s", p, in.SHA256)
			}
		}
		return false, fmt.Sprint(err)
	})
	if err != nil {
		t.Errorf("lodis status: %v", err)
	}

	// kill -9: mended, a new process answers.
	get(p, "/")
	pid = m.MainPID(ctx, unit(p))
	if _, err := m.Sh(ctx, fmt.Sprintf("kill -9 %d", pid)); err != nil {
		t.Fatal(err)
	}
	err = testenv.WaitFor(ctx, 10*time.Second, func() (bool, string) {
		code, body, err := get(p, "/")
		now := m.MainPID(ctx, unit(p))
		return err == nil && code == 200 && now != 0 && now != pid && strings.HasPrefix(body, "hello from Python"),
			fmt.Sprintf("%d %v, pid %d", code, err, now)
	})
	if err != nil {
		t.Fatalf("after kill -9: %v", err)
	}

	// No traffic: every worker is stopped by the supervisor, not failed.
	start = time.Now()
	err = testenv.WaitFor(ctx, 30*time.Second, func() (bool, string) {
		for i := range nPorts {
			if st := m.State(ctx, unit(port(i))); st != "inactive/dead" {
				return false, fmt.Sprintf("%s is %s", unit(port(i)), st)
			}
		}
		return true, ""
	})
	if err != nil {
		t.Fatalf("idle workers were not stopped: %v", err)
	}
	t.Logf("all %d idle workers stopped %s after the last request (IDLE_TIMEOUT=3s)", nPorts, time.Since(start).Round(100*time.Millisecond))
	for i := range nPorts {
		if r := m.Prop(ctx, unit(port(i)), "Result"); r != "success" {
			t.Errorf("%s stopped with result %s, want success", unit(port(i)), r)
		}
	}
	if log, _ := m.Output(ctx, "journalctl", "-u", "lodis-supervisor", "--no-pager", "-o", "cat"); !strings.Contains(log, "action=idle-stop") {
		t.Error("the supervisor's journal has no idle-stop")
	}
	// The next request starts one.
	if code, body, err := get(port(3), "/"); err != nil || code != 200 || !strings.HasPrefix(body, "hello from Python") {
		t.Errorf("after the idle stop: %d %q %v", code, body, err)
	}
	if st := m.State(ctx, unit(port(3))); st != "active/running" {
		t.Errorf("%s is %s after a request, want active/running", unit(port(3)), st)
	}
}
