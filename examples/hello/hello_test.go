package main

import (
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lodis/lodis/app"
)

// Port 18750 is this test's, from the apps range (18700-18799).
const port = "18750"

// TestDroppedRelease builds hello as its doc says, checks that the binary is
// static, and runs it as lodis would: socket-activated with the socket named
// "http", LODIS_PORT set and "serve" as its argument. Its page answers, its
// health report names its version and the SHA-256 of the very file built,
// and SIGTERM ends it with exit status 0.
func TestDroppedRelease(t *testing.T) {
	activate, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		t.Fatal("systemd-socket-activate (package systemd) is needed to pass the socket as systemd does")
	}
	bin := filepath.Join(t.TempDir(), "hello")
	build := exec.Command("go", "build", "-ldflags", "-X main.version=1.2.3-e2e", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	assertStatic(t, bin)
	sum := fileSHA256(t, bin)

	cmd := exec.Command(activate, "-l", "127.0.0.1:"+port, "--fdname=http", "-E", app.PortEnv+"="+port, bin, "serve")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })

	url := "http://127.0.0.1:" + port
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	var resp *http.Response
	deadline := time.Now().Add(10 * time.Second)
	for { // the first connection makes systemd-socket-activate exec hello
		if resp, err = c.Get(url + "/"); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("GET /: %v; output:\n%s", err, &out)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := "hello from pid"; resp.StatusCode != 200 || !strings.Contains(string(page), want) || !strings.Contains(string(page), "port "+port) {
		t.Fatalf("GET / = %d %q, want %q on port %s", resp.StatusCode, page, want, port)
	}

	resp, err = c.Get(url + app.DefaultHealthPath)
	if err != nil {
		t.Fatal(err)
	}
	var h app.Health
	err = json.NewDecoder(resp.Body).Decode(&h)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("health: %d %v", resp.StatusCode, err)
	}
	if h.Status != "ok" || h.Name != "hello" || h.Version != "1.2.3-e2e" || h.SHA256 != sum || h.Port != port || h.PID != cmd.Process.Pid {
		t.Fatalf("health = %+v, want ok, hello 1.2.3-e2e, sha256 %s, port %s, pid %d", h, sum, port, cmd.Process.Pid)
	}

	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("after SIGTERM: %v, want exit status 0; output:\n%s", err, &out)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("still running 15 s after SIGTERM; output:\n%s", &out)
	}
	if !strings.Contains(out.String(), "drained") {
		t.Errorf("no drain logged:\n%s", &out)
	}
}

// assertStatic fails unless bin has no program interpreter and needs no
// shared library.
func assertStatic(t *testing.T, bin string) {
	t.Helper()
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatalf("%s has a program interpreter: not static", bin)
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil && !errors.Is(err, elf.ErrNoSymbols) {
		t.Fatal(err)
	}
	if len(libs) > 0 {
		t.Fatalf("%s needs %v: not static", bin, libs)
	}
}

func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
