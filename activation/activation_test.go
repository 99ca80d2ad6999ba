package activation

import (
	"bufio"
	"context"
	"fmt"
	"io"
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
)

// The test binary doubles as a socket-activated child: TestMain runs child()
// instead of the tests when LODIS_TEST_CHILD is set, the way systemd would
// exec a service with LISTEN_FDS.
func TestMain(m *testing.M) {
	if mode := os.Getenv("LODIS_TEST_CHILD"); mode != "" {
		os.Exit(child(mode))
	}
	os.Exit(m.Run())
}

func child(mode string) int {
	// systemd sets LISTEN_PID after fork; the test parent cannot know our pid,
	// so it asks us to set it (unless it tests a foreign LISTEN_PID).
	if os.Getenv("LODIS_TEST_SET_PID") == "1" {
		os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
	}
	ls, err := Listeners(os.Getenv("LODIS_TEST_NAME"), "")
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		return 3
	}
	if mode == "listeners" {
		fmt.Println(len(ls))
		return 0
	}
	idle, _ := time.ParseDuration(os.Getenv("LODIS_TEST_IDLE"))
	ctx, stop := signalContext()
	defer stop()
	srv := &Server{
		Handler:        http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello\n") }),
		IdleTimeout:    idle,
		StatusInterval: 50 * time.Millisecond,
	}
	if err := srv.Serve(ctx, ls...); err != nil {
		fmt.Fprintln(os.Stderr, "serve:", err)
		return 4
	}
	return 0
}

func signalContext() (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 1)
	signalNotify(ch)
	go func() {
		select {
		case <-ch:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// notifySocket listens on a unixgram socket like systemd's $NOTIFY_SOCKET and
// delivers each datagram on the returned channel.
func notifySocket(t *testing.T) (string, <-chan string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ch := make(chan string, 100)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				close(ch)
				return
			}
			ch <- string(buf[:n])
		}
	}()
	return path, ch
}

func waitNotify(t *testing.T, ch <-chan string, want string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case s, ok := <-ch:
			if !ok {
				t.Fatalf("notify socket closed before %q", want)
			}
			if strings.Contains(s, want) {
				return
			}
		case <-deadline:
			t.Fatalf("no %q on the notify socket within 10 s", want)
		}
	}
}

type childProc struct {
	cmd  *exec.Cmd
	addr string
	out  *strings.Builder
	done chan error
}

// startChild passes a fresh loopback listener to a child test binary as fd 3,
// the way systemd passes sockets.
func startChild(t *testing.T, mode string, env ...string) *childProc {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err := l.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	defer l.Close()
	c := exec.Command(os.Args[0], "-test.run=^$")
	c.Env = append(os.Environ(), "LODIS_TEST_CHILD="+mode, "LISTEN_FDS=1", "LISTEN_FDNAMES=http")
	c.Env = append(c.Env, env...)
	c.ExtraFiles = []*os.File{f}
	out := &strings.Builder{}
	c.Stdout, c.Stderr = out, out
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	p := &childProc{cmd: c, addr: l.Addr().String(), out: out, done: make(chan error, 1)}
	go func() { p.done <- c.Wait() }()
	t.Cleanup(func() {
		c.Process.Kill()
		<-p.done
		p.done <- nil
	})
	return p
}

func (p *childProc) wait(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case err := <-p.done:
		p.done <- err
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	case <-time.After(within):
		t.Fatalf("child still running after %s; output:\n%s", within, p.out)
		return -1
	}
}

func get(t *testing.T, c *http.Client, url string) *http.Response {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp
}

func TestActivatedServeNotifyAndStop(t *testing.T) {
	sock, notes := notifySocket(t)
	p := startChild(t, "serve", "LODIS_TEST_SET_PID=1", "NOTIFY_SOCKET="+sock, "LODIS_TEST_NAME=http")
	waitNotify(t, notes, "READY=1")
	resp := get(t, http.DefaultClient, "http://"+p.addr+"/")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	waitNotify(t, notes, "STATUS=serving; ")
	p.cmd.Process.Signal(syscall.SIGTERM)
	waitNotify(t, notes, "STOPPING=1")
	if code := p.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0; output:\n%s", code, p.out)
	}
}

func TestIdleExit(t *testing.T) {
	sock, notes := notifySocket(t)
	p := startChild(t, "serve", "LODIS_TEST_SET_PID=1", "NOTIFY_SOCKET="+sock, "LODIS_TEST_IDLE=300ms")
	waitNotify(t, notes, "READY=1")
	get(t, &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}, "http://"+p.addr+"/")
	waitNotify(t, notes, "STOPPING=1")
	if code := p.wait(t, 5*time.Second); code != 0 {
		t.Fatalf("idle exit code %d, want 0; output:\n%s", code, p.out)
	}
}

func TestIdleTimerWaitsForOpenConnections(t *testing.T) {
	p := startChild(t, "serve", "LODIS_TEST_SET_PID=1", "LODIS_TEST_IDLE=300ms")
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	time.Sleep(800 * time.Millisecond) // well past the idle timeout with a connection open
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 200") {
		t.Fatalf("open connection not served after the idle timeout: %q %v; output:\n%s", line, err, p.out)
	}
	c.Close()
	if code := p.wait(t, 5*time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}

func TestBadActivationEnvironment(t *testing.T) {
	cases := []struct {
		name string
		env  []string
		want string
	}{
		{"foreign LISTEN_PID", []string{"LISTEN_PID=1"}, "LISTEN_PID=1 is not this process"},
		{"bad LISTEN_PID", []string{"LISTEN_PID=abc"}, "bad LISTEN_PID"},
		{"unknown name", []string{"LODIS_TEST_SET_PID=1", "LODIS_TEST_NAME=nope"}, `no passed socket is named "nope"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := startChild(t, "listeners", tc.env...)
			if code := p.wait(t, 5*time.Second); code != 3 {
				t.Fatalf("exit %d, want 3; output:\n%s", code, p.out)
			}
			if !strings.Contains(p.out.String(), tc.want) {
				t.Fatalf("output %q lacks %q", p.out, tc.want)
			}
		})
	}
}

func TestCheckEnv(t *testing.T) {
	cases := []struct {
		fds, pid string
		ok       bool
	}{
		{"1", "42", true}, {"2", "", true}, {"0", "42", false}, {"-1", "42", false},
		{"x", "42", false}, {"1", "43", false}, {"1", "4x", false},
	}
	for _, c := range cases {
		err := checkEnv(c.fds, c.pid, 42)
		if (err == nil) != c.ok {
			t.Errorf("checkEnv(%q, %q) = %v, want ok=%v", c.fds, c.pid, err, c.ok)
		}
	}
}

func TestFallbackListen(t *testing.T) {
	t.Setenv("LISTEN_FDS", "")
	os.Unsetenv("LISTEN_FDS")
	if _, err := Listeners("", ""); err != ErrNotActivated {
		t.Fatalf("got %v, want ErrNotActivated", err)
	}
	for _, bad := range []string{"nope", "127.0.0.1:99999", "127.0.0.1:http-alt-x"} {
		if _, err := Listeners("", bad); err == nil || !strings.Contains(err.Error(), "bad listen address") {
			t.Errorf("Listeners(%q) = %v, want a bad listen address error", bad, err)
		}
	}
	ls, err := Listeners("", "127.0.0.1:0")
	if err != nil || len(ls) != 1 {
		t.Fatalf("fallback: %v %v", ls, err)
	}
	ls[0].Close()
}

// TestDrainLosesNothing drives a Server in-process: an in-flight slow request,
// a keep-alive client that sends its next request during the drain, and an
// idle keep-alive connection all end without an error seen by the client.
func TestDrainLosesNothing(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	srv := &Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/slow" {
				<-release
			}
			io.WriteString(w, "ok")
		}),
		DrainTimeout: 5 * time.Second,
		IdleGrace:    300 * time.Millisecond,
		Notifier:     nopNotifier{},
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, l) }()
	url := "http://" + l.Addr().String()

	kc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	get(t, kc, url+"/") // opens a keep-alive connection that stays idle

	var wg sync.WaitGroup
	var slowResp *http.Response
	var slowErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		slowResp, slowErr = http.Get(url + "/slow")
		if slowErr == nil {
			io.ReadAll(slowResp.Body)
			slowResp.Body.Close()
		}
	}()
	waitFor(t, func() bool { return srv.Stats().Requests >= 2 })
	cancel()
	waitFor(t, func() bool { return srv.Stats().Draining })

	// The keep-alive client sends its next request inside the grace period:
	// answered, and told to close.
	resp := get(t, kc, url+"/")
	if resp.StatusCode != 200 || !resp.Close {
		t.Fatalf("request during drain: status %d close=%v, want 200 and Connection: close", resp.StatusCode, resp.Close)
	}
	close(release)
	wg.Wait()
	if slowErr != nil || slowResp.StatusCode != 200 || !slowResp.Close {
		t.Fatalf("in-flight request: %v, want 200 with Connection: close", slowErr)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after the drain")
	}
	if _, err := net.DialTimeout("tcp", l.Addr().String(), time.Second); err == nil {
		t.Fatal("listener still accepting after the drain")
	}
}

func TestDrainDeadlineCutsStuckConnections(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	block := make(chan struct{})
	defer close(block)
	srv := &Server{
		Handler:      http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-block }),
		DrainTimeout: 300 * time.Millisecond,
		Notifier:     nopNotifier{},
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, l) }()
	go http.Get("http://" + l.Addr().String() + "/")
	waitFor(t, func() bool { return srv.Stats().Requests == 1 })
	cancel()
	select {
	case err := <-served:
		if err == nil || !strings.Contains(err.Error(), "drain deadline") {
			t.Fatalf("Serve = %v, want a drain deadline error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return at the drain deadline")
	}
}

func TestServeRejectsMisuse(t *testing.T) {
	if err := (&Server{}).Serve(context.Background()); err == nil {
		t.Fatal("nil handler accepted")
	}
	if err := (&Server{Handler: http.NotFoundHandler()}).Serve(context.Background()); err == nil {
		t.Fatal("no listener accepted")
	}
}

type nopNotifier struct{}

func (nopNotifier) Notify(string) error { return nil }

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
