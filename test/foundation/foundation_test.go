package foundation

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lodis/lodis/internal/testenv"
)

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func enable(t *testing.T, ctx context.Context, ports ...int) {
	t.Helper()
	args := []string{"enable", "--now"}
	for _, p := range ports {
		args = append(args, fmt.Sprintf("lodis@%d.socket", p))
	}
	if _, err := m.Systemctl(ctx, args...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		args[0], args[1] = "disable", "--now"
		m.Systemctl(context.Background(), args...)
	})
}

// workers counts the lodis worker processes serving port inside the machine.
func workers(t *testing.T, ctx context.Context, port int) int {
	out, _ := m.Output(ctx, "pgrep", "-c", "-f", fmt.Sprintf("^[^ ]+ serve --port %d( |$)", port))
	n, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("pgrep: %q", out)
	}
	return n
}

func dropIn(t *testing.T, ctx context.Context, unit, name, body string) {
	t.Helper()
	path := fmt.Sprintf("/etc/systemd/system/%s.d/%s.conf", unit, name)
	if err := m.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Systemctl(ctx, "daemon-reload"); err != nil {
		t.Fatal(err)
	}
}

// Test 1: sockets listen, no worker before the first connection, the first
// request starts exactly one worker even when many connections race.
func TestActivationStartsOneWorker(t *testing.T) {
	ctx := ctxT(t, time.Minute)
	ports := []int{18101, 18102, 18103}
	enable(t, ctx, ports...)
	for _, p := range ports {
		if s := m.State(ctx, fmt.Sprintf("lodis@%d.socket", p)); s != "active/listening" {
			t.Fatalf("lodis@%d.socket is %s, want active/listening", p, s)
		}
		if s := m.State(ctx, fmt.Sprintf("lodis@%d.service", p)); s != "inactive/dead" {
			t.Fatalf("lodis@%d.service is %s before any connection, want inactive/dead", p, s)
		}
		if n := workers(t, ctx, p); n != 0 {
			t.Fatalf("%d worker processes for port %d before any connection", n, p)
		}
	}
	// One plain first request.
	h, err := testenv.Health(ctx, ports[0])
	if err != nil {
		t.Fatalf("first request to %d: %v", ports[0], err)
	}
	if h.Port != strconv.Itoa(ports[0]) || h.PID == 0 || len(h.SHA256) != 64 {
		t.Fatalf("health = %+v", h)
	}
	if n := workers(t, ctx, ports[0]); n != 1 {
		t.Fatalf("%d workers after the first request, want 1", n)
	}
	// 32 concurrent first connections to a cold port: one worker answers all.
	var wg sync.WaitGroup
	pids := make(chan int, 32)
	errs := make(chan error, 32)
	for i := 0; i < 32; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h, err := testenv.Health(ctx, ports[1])
			if err != nil {
				errs <- err
				return
			}
			pids <- h.PID
		}()
	}
	wg.Wait()
	close(pids)
	close(errs)
	for err := range errs {
		t.Errorf("concurrent first request: %v", err)
	}
	seen := map[int]bool{}
	for p := range pids {
		seen[p] = true
	}
	if len(seen) != 1 {
		t.Fatalf("concurrent first connections were answered by %d workers, want 1: %v", len(seen), seen)
	}
	if n := workers(t, ctx, ports[1]); n != 1 {
		t.Fatalf("%d worker processes after concurrent activation, want 1", n)
	}
	if n := workers(t, ctx, ports[2]); n != 0 {
		t.Fatalf("untouched port %d has %d workers", ports[2], n)
	}
}

// Test 2: with a short idle timeout the worker exits by itself, the unit ends
// inactive (not failed), and the port still answers from a new worker.
func TestIdleExit(t *testing.T) {
	ctx := ctxT(t, time.Minute)
	port := 18110
	unit := fmt.Sprintf("lodis@%d.service", port)
	dropIn(t, ctx, unit, "idle", "[Service]\nExecStart=\nExecStart=/usr/bin/lodis exec-app -- serve --port %i --idle-timeout 1s\n")
	enable(t, ctx, port)
	first, err := testenv.Health(ctx, port)
	if err != nil {
		t.Fatal(err)
	}
	err = testenv.WaitFor(ctx, 15*time.Second, func() (bool, string) {
		s := m.State(ctx, unit)
		return s == "inactive/dead", "worker state " + s
	})
	if err != nil {
		t.Fatalf("worker did not exit when idle: %v", err)
	}
	if r := m.Prop(ctx, unit, "Result"); r != "success" {
		t.Fatalf("idle exit Result=%s, want success", r)
	}
	if s := m.State(ctx, fmt.Sprintf("lodis@%d.socket", port)); s != "active/listening" {
		t.Fatalf("socket after idle exit: %s", s)
	}
	second, err := testenv.Health(ctx, port)
	if err != nil {
		t.Fatalf("port did not answer after idle exit: %v", err)
	}
	if second.PID == first.PID {
		t.Fatalf("same pid %d answered after idle exit", first.PID)
	}
}

// Test 3: systemctl restart while a keep-alive client loops requests: zero
// failed requests.
func TestGracefulRestartLosesNothing(t *testing.T) {
	ctx := ctxT(t, 2*time.Minute)
	port := 18120
	enable(t, ctx, port)
	url := fmt.Sprintf("http://127.0.0.1:%d/__/time", port)
	// Several keep-alive clients that never retry (a failed request is lost).
	const clients = 4
	stop := make(chan struct{})
	var ok, failed, closes int64
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr := &http.Transport{MaxIdleConnsPerHost: 1, DisableCompression: true}
			c := &http.Client{Transport: noRetry{tr}, Timeout: 10 * time.Second}
			defer tr.CloseIdleConnections()
			for n := 0; n < 200000; n++ {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := c.Get(url)
				mu.Lock()
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				switch {
				case err != nil:
					failed++
					if firstErr == nil {
						firstErr = err
					}
				case resp.StatusCode != 200:
					failed++
				default:
					ok++
					if resp.Close {
						closes++
					}
				}
				mu.Unlock()
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)
	unit := fmt.Sprintf("lodis@%d.service", port)
	for i := 0; i < 3; i++ {
		if _, err := m.Systemctl(ctx, "restart", unit); err != nil {
			t.Fatal(err)
		}
		time.Sleep(700 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	t.Logf("keep-alive clients across 3 restarts: %d ok, %d failed, %d answered with Connection: close", ok, failed, closes)
	if ok < 100 {
		t.Fatalf("only %d requests succeeded: the load did not run", ok)
	}
	if failed != 0 {
		t.Fatalf("%d requests failed across graceful restarts (first: %v)", failed, firstErr)
	}
	if closes == 0 {
		t.Fatalf("no response carried Connection: close: the restarts did not drain")
	}
}

// noRetry stops net/http's client from silently retrying a request on a
// reused connection, so every lost request is counted.
type noRetry struct{ rt http.RoundTripper }

func (n noRetry) RoundTrip(r *http.Request) (*http.Response, error) {
	r2 := r.Clone(r.Context())
	// A body makes the request non-replayable (net/http only retries
	// requests it can replay).
	r2.Method = http.MethodGet
	r2.Body = io.NopCloser(strings.NewReader(""))
	r2.GetBody = nil
	r2.ContentLength = 0
	return n.rt.RoundTrip(r2)
}

// Test 4: SIGKILL storm and restart storm leave the socket listening.
func TestStormsLeaveTheSocketListening(t *testing.T) {
	ctx := ctxT(t, 2*time.Minute)
	port := 18130
	sock := fmt.Sprintf("lodis@%d.socket", port)
	unit := fmt.Sprintf("lodis@%d.service", port)
	enable(t, ctx, port)
	start := time.Now()
	kills := 0
	for i := 0; i < 40; i++ {
		if _, err := testenv.Health(ctx, port); err != nil {
			t.Logf("request %d during the kill storm: %v", i, err)
		}
		if _, err := m.Systemctl(ctx, "kill", "--signal=SIGKILL", unit); err == nil {
			kills++
		}
		time.Sleep(30 * time.Millisecond)
	}
	t.Logf("%d SIGKILLs in %s", kills, time.Since(start).Round(time.Millisecond))
	if kills < 30 {
		t.Fatalf("only %d kills landed: the storm did not happen", kills)
	}
	for i := 0; i < 10; i++ {
		if _, err := m.Systemctl(ctx, "restart", unit); err != nil {
			t.Fatalf("restart %d: %v", i, err)
		}
	}
	if s := m.State(ctx, sock); s == "failed/failed" || !strings.HasPrefix(s, "active/") {
		t.Fatalf("socket after the storms: %s (Result=%s)", s, m.Prop(ctx, sock, "Result"))
	}
	if _, err := testenv.Health(ctx, port); err != nil {
		t.Fatalf("port does not answer after the storms: %v", err)
	}
}

// Test 5: systemd-analyze verify on real instances and the hardening score.
func TestUnitsVerifyAndHardening(t *testing.T) {
	ctx := ctxT(t, time.Minute)
	out, err := m.Output(ctx, "systemd-analyze", "verify",
		"/usr/lib/systemd/system/lodis@18140.socket", "/usr/lib/systemd/system/lodis@18140.service",
		"/usr/lib/systemd/system/lodis.target")
	if err != nil {
		t.Fatalf("systemd-analyze verify: %v", err)
	}
	if strings.TrimSpace(out) != "" {
		t.Fatalf("systemd-analyze verify printed warnings:\n%s", out)
	}
	out, _ = m.Output(ctx, "systemd-analyze", "security", "--no-pager", "lodis@18140.service")
	var score float64
	found := false
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if i := strings.Index(line, "Overall exposure level for lodis@18140.service:"); i >= 0 {
			f := strings.Fields(line[i+len("Overall exposure level for lodis@18140.service:"):])
			if len(f) > 0 {
				score, err = strconv.ParseFloat(f[0], 64)
				found = err == nil
			}
		}
	}
	if !found {
		t.Fatalf("no exposure level in systemd-analyze security output:\n%s", out)
	}
	t.Logf("systemd-analyze security lodis@18140.service: %.1f", score)
	fmt.Printf("hardening: systemd-analyze security lodis@P.service = %.1f (goal ≤ 1.5)\n", score)
	if score > 1.5 {
		t.Fatalf("exposure %.1f > 1.5", score)
	}
}

// The worker answers a malformed request with 400 and keeps serving.
func TestMalformedRequest(t *testing.T) {
	ctx := ctxT(t, 30*time.Second)
	port := 18150
	enable(t, ctx, port)
	if _, err := testenv.Health(ctx, port); err != nil {
		t.Fatal(err)
	}
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GARBAGE\r\n\r\n")
	line, _ := bufio.NewReader(c).ReadString('\n')
	if !strings.HasPrefix(line, "HTTP/1.1 400") {
		t.Fatalf("malformed request answered %q, want 400", line)
	}
	if _, err := testenv.Health(ctx, port); err != nil {
		t.Fatalf("worker stopped serving after a malformed request: %v", err)
	}
}
