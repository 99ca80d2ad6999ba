package app_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lodis/lodis/activation"
	"github.com/lodis/lodis/app"
)

// The test binary doubles as a service started by systemd: with
// LODIS_APP_TEST_CHILD set, TestMain runs app.Run as a main function would.
func TestMain(m *testing.M) {
	if os.Getenv("LODIS_APP_TEST_CHILD") != "" {
		// systemd sets LISTEN_PID after fork; the parent cannot know our pid.
		os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
		log := slog.New(slog.NewTextHandler(os.Stderr, nil))
		if err := app.Run(context.Background(), hello, app.Options{Name: "child", Logger: log}); err != nil {
			fmt.Fprintln(os.Stderr, "error:", err)
			os.Exit(3)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// startChild runs the test binary as a service, with fd as its fd 3 and
// LISTEN_FDS=1, and returns it with its combined output.
func startChild(t *testing.T, fd *os.File) (*exec.Cmd, *strings.Builder, <-chan error) {
	t.Helper()
	c := exec.Command(os.Args[0], "-test.run=^$")
	c.Env = append(os.Environ(), "LODIS_APP_TEST_CHILD=1", "LISTEN_FDS=1", "LISTEN_FDNAMES=http")
	c.ExtraFiles = []*os.File{fd}
	out := &strings.Builder{}
	c.Stdout, c.Stderr = out, out
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	t.Cleanup(func() { c.Process.Kill() })
	return c, out, done
}

func exitCode(t *testing.T, done <-chan error, out fmt.Stringer) int {
	t.Helper()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	case <-time.After(15 * time.Second):
		t.Fatalf("service still running after 15 s; output:\n%s", out)
		return -1
	}
}

// TestRunActivatedUntilSIGTERM: a process that calls Run on a passed socket
// serves it, and exits 0 on SIGTERM as systemd's stop expects.
func TestRunActivatedUntilSIGTERM(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, _ := l.(*net.TCPListener).File()
	c, out, done := startChild(t, f)
	f.Close()
	l.Close()
	url := "http://" + l.Addr().String()
	if code, body := get(t, url+"/"); code != 200 || body != "hello\n" {
		t.Fatalf("GET / = %d %q", code, body)
	}
	if code, h, _ := getHealth(t, url+app.DefaultHealthPath); code != 200 || h.PID != c.Process.Pid || h.Name != "child" {
		t.Fatalf("health = %d %+v, want the child's", code, h)
	}
	c.Process.Signal(syscall.SIGTERM)
	if code := exitCode(t, done, out); code != 0 {
		t.Fatalf("exit %d after SIGTERM, want 0; output:\n%s", code, out)
	}
	if !contains(out.String(), "msg=drained") {
		t.Errorf("no drain logged:\n%s", out)
	}
}

// TestPassedDescriptorNotASocket: fd 3 a plain file gives one clear error and
// a non-zero exit.
func TestPassedDescriptorNotASocket(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "not-a-socket"))
	if err != nil {
		t.Fatal(err)
	}
	_, out, done := startChild(t, f)
	f.Close()
	if code := exitCode(t, done, out); code != 3 {
		t.Fatalf("exit %d, want 3; output:\n%s", code, out)
	}
	if !contains(out.String(), "LISTEN_FDS=1, but 1 of the passed descriptors are not listening stream sockets") {
		t.Fatalf("output lacks a clear error:\n%s", out)
	}
}

func TestBadActivationEnvironment(t *testing.T) {
	for _, c := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"LISTEN_FDS": "abc"}, `bad LISTEN_FDS="abc": not a number`},
		{map[string]string{"LISTEN_FDS": "0"}, "LISTEN_FDS=0: systemd passed no socket"},
		{map[string]string{"LISTEN_FDS": "1", "LISTEN_PID": "1"}, "LISTEN_PID=1 is not this process"},
		{map[string]string{"LISTEN_FDS": "1", "LISTEN_PID": "x"}, `bad LISTEN_PID="x"`},
	} {
		for k, v := range c.env {
			t.Setenv(k, v)
		}
		a, err := app.New(app.Options{Logger: quiet, Listen: "127.0.0.1:0"})
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Serve(context.Background(), hello); err == nil || !contains(err.Error(), c.want) {
			t.Errorf("%v: Serve = %v, want %q", c.env, err, c.want)
		}
		os.Unsetenv("LISTEN_PID")
	}
}

func TestListenOutsideSystemd(t *testing.T) {
	t.Setenv("LISTEN_FDS", "")
	os.Unsetenv("LISTEN_FDS")
	t.Setenv(app.PortEnv, "")
	const addr = "127.0.0.1:18757"
	s := serve(t, hello, app.Options{Listen: addr})
	waitFor(t, "the fallback address answers", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	if code, h, _ := getHealth(t, s.url+app.DefaultHealthPath); code != 200 || h.Port != "18757" {
		t.Fatalf("health on the fallback address: %d %+v", code, h)
	}

	a, _ := app.New(app.Options{Logger: quiet})
	if err := a.Serve(context.Background(), hello); !errors.Is(err, activation.ErrNotActivated) {
		t.Errorf("no LISTEN_FDS and no Listen: %v, want activation.ErrNotActivated", err)
	}
	a, _ = app.New(app.Options{Logger: quiet, Listen: "nope"})
	if err := a.Serve(context.Background(), hello); err == nil || !contains(err.Error(), "bad listen address") {
		t.Errorf("Listen nope: %v", err)
	}
}

// TestDrain: a request in flight when the stop comes is answered (and told
// to close), the listener is closed, and Serve returns nil.
func TestDrain(t *testing.T) {
	release := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
		io.WriteString(w, "done\n")
	})
	s := serve(t, h, app.Options{DrainTimeout: 5 * time.Second, IdleGrace: 100 * time.Millisecond})
	var wg sync.WaitGroup
	var resp *http.Response
	var body []byte
	var rerr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		resp, rerr = http.Get(s.url + "/slow")
		if rerr == nil {
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
	}()
	waitFor(t, "the slow request in flight", func() bool { return s.app.Stats().Requests == 1 })
	s.stop()
	waitFor(t, "the drain began", func() bool { return s.app.Stats().Draining })
	close(release)
	wg.Wait()
	if rerr != nil || resp.StatusCode != 200 || string(body) != "done\n" || !resp.Close {
		t.Fatalf("in-flight request: %v, want 200 done with Connection: close", rerr)
	}
	if err := s.wait(t, 10*time.Second); err != nil {
		t.Fatalf("Serve = %v, want nil after a clean drain", err)
	}
	if _, err := net.DialTimeout("tcp", s.addr, time.Second); err == nil {
		t.Fatal("listener still accepting after the drain")
	}
}

// TestDrainDeadlineIsStillACleanStop: a request stuck past DrainTimeout is cut
// and Serve returns nil, so that the unit is not marked failed.
func TestDrainDeadlineIsStillACleanStop(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	s := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-block }),
		app.Options{DrainTimeout: 200 * time.Millisecond})
	go http.Get(s.url + "/")
	waitFor(t, "the request in flight", func() bool { return s.app.Stats().Requests == 1 })
	start := time.Now()
	s.stop()
	if err := s.wait(t, 10*time.Second); err != nil {
		t.Fatalf("Serve = %v, want nil", err)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Fatalf("returned after %s, before the drain timeout", d)
	}
}

func TestIdleExit(t *testing.T) {
	s := serve(t, hello, app.Options{IdleTimeout: 200 * time.Millisecond})
	if code, _ := get(t, s.url+"/"); code != 200 {
		t.Fatal(code)
	}
	if err := s.wait(t, 10*time.Second); err != nil {
		t.Fatalf("idle exit: %v, want nil", err)
	}
	if !s.app.Stats().Draining {
		t.Error("Serve returned without a drain")
	}
}

func TestNeverIdleByDefault(t *testing.T) {
	s := serve(t, hello, app.Options{})
	get(t, s.url+"/")
	select {
	case err := <-s.done:
		t.Fatalf("Serve returned %v with IdleTimeout zero", err)
	case <-time.After(time.Second):
	}
}

func TestNotify(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	t.Setenv("NOTIFY_SOCKET", path)
	s := serve(t, hello, app.Options{})
	read := func(want string) {
		t.Helper()
		buf := make([]byte, 4096)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			n, err := c.Read(buf)
			if err != nil {
				t.Fatalf("no %q on $NOTIFY_SOCKET: %v", want, err)
			}
			if strings.Contains(string(buf[:n]), want) {
				return
			}
		}
	}
	read("READY=1")
	s.stop()
	read("STOPPING=1")
}

func TestMisuse(t *testing.T) {
	a, _ := app.New(app.Options{Logger: quiet})
	if err := a.Serve(context.Background(), nil); err == nil || !contains(err.Error(), "handler is nil") {
		t.Errorf("nil handler: %v", err)
	}
	s := serve(t, hello, app.Options{})
	get(t, s.url+"/") // the first Serve is under way
	if err := s.app.Serve(context.Background(), hello); err == nil || !contains(err.Error(), "serves once") {
		t.Errorf("second Serve: %v", err)
	}
	for _, o := range []app.Options{{IdleTimeout: -1}, {DrainTimeout: -1}, {IdleGrace: -1}} {
		if _, err := app.New(o); err == nil || !contains(err.Error(), "must not be negative") {
			t.Errorf("New(%+v) = %v, want an error", o, err)
		}
	}
}
