// Package python_test runs examples/python/app.py as lodis would: through
// its #!/usr/bin/python3 line, with the port's socket passed as fd 3 by
// systemd-socket-activate. Ports 18751-18756 (apps range).
package python_test

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lodis/lodis/app"
	"github.com/lodis/lodis/internal/appconf"
)

const python = "/usr/bin/python3" // app.py's interpreter line

func needPython(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(python); err != nil {
		t.Skipf("%s is not installed (test/deps.sh installs it): %v", python, err)
	}
}

// proc is app.py running under systemd-socket-activate, which execs it in
// place on the first connection: its pid is app.py's.
type proc struct {
	cmd  *exec.Cmd
	url  string
	out  *strings.Builder
	done chan error
}

func start(t *testing.T, port int, env ...string) *proc {
	t.Helper()
	needPython(t)
	activate, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		t.Fatal("systemd-socket-activate (package systemd) is needed to pass the socket as systemd does")
	}
	args := []string{"-l", fmt.Sprintf("127.0.0.1:%d", port), "--fdname=http", "-E", fmt.Sprintf("%s=%d", app.PortEnv, port)}
	for _, e := range env {
		args = append(args, "-E", e)
	}
	p := &proc{cmd: exec.Command(activate, append(args, "./app.py")...), url: fmt.Sprintf("http://127.0.0.1:%d", port),
		out: &strings.Builder{}, done: make(chan error, 1)}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() { p.cmd.Process.Kill() })
	// The first connection makes systemd-socket-activate exec app.py.
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, _, err := p.get(t, "/")
		if err == nil && code == 200 {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("app.py did not answer within 10 s: %v; output:\n%s", err, p.out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *proc) get(t *testing.T, path string) (int, string, error) {
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(p.url + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func (p *proc) exit(t *testing.T) int {
	t.Helper()
	select {
	case err := <-p.done:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	case <-time.After(20 * time.Second):
		t.Fatalf("app.py still running after 20 s; output:\n%s", p.out)
		return -1
	}
}

func fileSHA256(t *testing.T, path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestPageAndHealth(t *testing.T) {
	p := start(t, 18751)
	code, page, err := p.get(t, "/")
	if err != nil || code != 200 || !strings.Contains(page, "hello from Python") || !strings.Contains(page, "port 18751") {
		t.Fatalf("GET / = %d %q %v", code, page, err)
	}
	code, body, err := p.get(t, app.DefaultHealthPath)
	if err != nil || code != 200 {
		t.Fatalf("GET %s = %d %v", app.DefaultHealthPath, code, err)
	}
	var h app.Health // the contract's wire type reads what app.py sends
	if err := json.Unmarshal([]byte(body), &h); err != nil {
		t.Fatalf("health is not JSON: %v\n%s", err, body)
	}
	if h.Status != "ok" || h.Version != "1.0.0" || h.PID != p.cmd.Process.Pid || h.Port != "18751" || h.SHA256 != fileSHA256(t, "app.py") {
		t.Fatalf("health = %+v, want ok, 1.0.0, pid %d, port 18751, app.py's sha256", h, p.cmd.Process.Pid)
	}
	if code, _, _ := p.get(t, "/nope"); code != 404 {
		t.Errorf("GET /nope = %d, want 404", code)
	}
}

func TestHealthPathFromEnv(t *testing.T) {
	p := start(t, 18752, app.HealthPathEnv+"=/healthz")
	if code, body, err := p.get(t, "/healthz"); err != nil || code != 200 || !strings.Contains(body, `"status": "ok"`) {
		t.Fatalf("GET /healthz = %d %q %v", code, body, err)
	}
	if code, _, _ := p.get(t, app.DefaultHealthPath); code != 404 {
		t.Errorf("GET %s with %s=/healthz = %d, want 404", app.DefaultHealthPath, app.HealthPathEnv, code)
	}
}

// TestDrainOnSIGTERM: a request in flight when SIGTERM comes gets its whole
// answer, the port stops accepting, and app.py exits 0.
func TestDrainOnSIGTERM(t *testing.T) {
	p := start(t, 18753)
	c, err := net.Dial("tcp", strings.TrimPrefix(p.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	io.WriteString(c, "GET /slow?seconds=1.5 HTTP/1.1\r\nHost: x\r\n\r\n")
	r := bufio.NewReader(c)
	resp, err := http.ReadResponse(r, nil) // the header comes at once: the request is in flight
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("slow request: %v", err)
	}
	sent := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	body, err := io.ReadAll(resp.Body)
	if err != nil || string(body) != "slept 1.5 s\n" {
		t.Fatalf("in-flight answer after SIGTERM: %q %v, want it whole", body, err)
	}
	if code := p.exit(t); code != 0 {
		t.Fatalf("exit status %d after SIGTERM, want 0; output:\n%s", code, p.out)
	}
	t.Logf("exited %s after SIGTERM", time.Since(sent).Round(time.Millisecond))
	if _, err := net.DialTimeout("tcp", strings.TrimPrefix(p.url, "http://"), time.Second); err == nil {
		t.Error("port still accepting after app.py exited")
	}
	if !strings.Contains(p.out.String(), "app.py: drained") {
		t.Errorf("no drain in the output:\n%s", p.out)
	}
}

// TestBadActivation: every way of starting app.py without a usable socket
// gives one clear line on stderr and exit status 1.
func TestBadActivation(t *testing.T) {
	needPython(t)
	file, err := os.Create(filepath.Join(t.TempDir(), "plain"))
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	udpFile, _ := udp.(*net.UDPConn).File()
	defer udpFile.Close()
	for _, c := range []struct {
		name string
		env  []string
		fd3  *os.File
		want string
	}{
		{"no LISTEN_FDS", nil, nil, "not socket-activated: LISTEN_FDS is unset"},
		{"garbage LISTEN_FDS", []string{"LISTEN_FDS=abc"}, nil, "bad LISTEN_FDS='abc'"},
		{"zero LISTEN_FDS", []string{"LISTEN_FDS=0"}, nil, "bad LISTEN_FDS='0'"},
		{"foreign LISTEN_PID", []string{"LISTEN_FDS=1", "LISTEN_PID=1"}, nil, "LISTEN_PID=1 is not this process"},
		{"no fd 3", []string{"LISTEN_FDS=1"}, nil, "fd 3 is not a socket: Bad file descriptor"},
		{"fd 3 a file", []string{"LISTEN_FDS=1"}, file, "fd 3 is not a socket: Socket operation on non-socket"},
		{"fd 3 a datagram socket", []string{"LISTEN_FDS=1"}, udpFile, "fd 3 is not a listening stream socket"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cmd := exec.Command("./app.py")
			cmd.Env = append([]string{"PATH=/usr/bin:/bin"}, c.env...)
			if c.fd3 != nil {
				cmd.ExtraFiles = []*os.File{c.fd3}
			}
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Fatalf("exit: %v, want status 1; output:\n%s", err, out)
			}
			if lines := strings.Split(strings.TrimSpace(string(out)), "\n"); len(lines) != 1 || !strings.Contains(lines[0], c.want) {
				t.Fatalf("output %q, want one line with %q", out, c.want)
			}
		})
	}
}

// TestReadmeAppConf: the app.conf the README shows is one lodis accepts,
// with the settings it says.
func TestReadmeAppConf(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(b), "# /etc/lodis/app.conf")
	_, block, _ = strings.Cut(block, "\n") // the rest of the title line
	block, _, _ = strings.Cut(block, "```")
	if !ok || block == "" {
		t.Fatal("README.md shows no /etc/lodis/app.conf")
	}
	c, err := appconf.Parse(strings.NewReader(block), "README.md")
	if err != nil {
		t.Fatalf("the README's app.conf: %v", err)
	}
	if c.Ready != appconf.ReadyHealth || c.IdleTimeout != 5*time.Minute || c.StopTimeout != 15*time.Second {
		t.Errorf("the README's app.conf gives %+v", c)
	}
}
