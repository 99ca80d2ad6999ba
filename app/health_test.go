package app_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lodis/lodis/app"
)

func TestHealthReport(t *testing.T) {
	t.Setenv(app.PortEnv, "")
	t.Setenv(app.HealthPathEnv, "")
	before := time.Now()
	s := serve(t, hello, app.Options{Name: "hello", Version: "1.2.3", Commit: "abc123"})
	if code, body := get(t, s.url+"/"); code != 200 || body != "hello\n" {
		t.Fatalf("GET / = %d %q, want the handler's answer", code, body)
	}
	code, h, hdr := getHealth(t, s.url+app.DefaultHealthPath)
	exe, _ := os.Executable()
	_, port, _ := net.SplitHostPort(s.addr)
	if code != 200 || h.Status != "ok" || h.Reason != "" {
		t.Fatalf("health = %d %+v, want 200 ok", code, h)
	}
	if h.Name != "hello" || h.Version != "1.2.3" || h.Commit != "abc123" || h.PID != os.Getpid() || h.Port != port {
		t.Errorf("health = %+v, want name hello, version 1.2.3, commit abc123, pid %d, port %s", h, os.Getpid(), port)
	}
	if want := fileSHA256(t, exe); h.SHA256 != want {
		t.Errorf("sha256 %q, want %s (this test binary)", h.SHA256, want)
	}
	if h.Requests != 2 || h.OpenConns < 1 || h.OpenConns > 2 {
		t.Errorf("requests %d open_conns %d, want 2 and this connection (the last may still be closing)", h.Requests, h.OpenConns)
	}
	started, err := time.Parse(time.RFC3339Nano, h.Started)
	if err != nil || started.Before(before.Add(-time.Second)) || h.UptimeSeconds <= 0 || h.Uptime() > time.Since(before)+time.Second {
		t.Errorf("started %q uptime %v: want a start in this test", h.Started, h.UptimeSeconds)
	}
	if hdr.Get("Content-Type") != "application/json" || hdr.Get("Cache-Control") != "no-store" {
		t.Errorf("headers %v", hdr)
	}
	if got := s.app.Health(); got.SHA256 != h.SHA256 || got.Version != "1.2.3" {
		t.Errorf("App.Health() = %+v, want the served report", got)
	}
}

func TestHealthMethodsAndDefaults(t *testing.T) {
	t.Setenv(app.PortEnv, "8080")
	t.Setenv(app.HealthPathEnv, "")
	s := serve(t, hello, app.Options{})
	_, h, _ := getHealth(t, s.url+app.DefaultHealthPath)
	if h.Port != "8080" {
		t.Errorf("port %q, want $LODIS_PORT 8080", h.Port)
	}
	if h.Version == "" || h.Name == "" {
		t.Errorf("version %q name %q: want defaults from the build and the executable", h.Version, h.Name)
	}
	for _, m := range []string{"POST", "PUT", "DELETE"} {
		req, _ := http.NewRequest(m, s.url+app.DefaultHealthPath, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 405 || resp.Header.Get("Allow") != "GET, HEAD" {
			t.Errorf("%s health = %d (Allow %q), want 405", m, resp.StatusCode, resp.Header.Get("Allow"))
		}
	}
	resp, err := http.Head(s.url + app.DefaultHealthPath)
	if err != nil || resp.StatusCode != 200 {
		t.Errorf("HEAD health: %v", err)
	}
}

func TestHealthPathFromEnvAndOptions(t *testing.T) {
	t.Setenv(app.HealthPathEnv, "/healthz")
	s := serve(t, hello, app.Options{})
	if code, h, _ := getHealth(t, s.url+"/healthz"); code != 200 || h.Status != "ok" {
		t.Fatalf("GET /healthz with %s=/healthz: %d %+v", app.HealthPathEnv, code, h)
	}
	if code, body := get(t, s.url+app.DefaultHealthPath); code != 200 || body != "hello\n" {
		t.Errorf("GET %s = %d %q: want it passed to the handler", app.DefaultHealthPath, code, body)
	}
	if s.app.HealthPath() != "/healthz" {
		t.Errorf("HealthPath() = %q", s.app.HealthPath())
	}
	o := serve(t, hello, app.Options{HealthPath: "/ready"})
	if code, _, _ := getHealth(t, o.url+"/ready"); code != 200 {
		t.Errorf("Options.HealthPath over the environment: %d", code)
	}
}

func TestBadHealthPath(t *testing.T) {
	for _, p := range []string{"healthz", "/a b", "/x?y=1", "/x#y", "/x\n"} {
		t.Setenv(app.HealthPathEnv, p)
		if _, err := app.New(app.Options{}); err == nil || !strings.Contains(err.Error(), "bad "+app.HealthPathEnv) {
			t.Errorf("%s=%q: New = %v, want an error naming the variable", app.HealthPathEnv, p, err)
		}
		t.Setenv(app.HealthPathEnv, "")
		if _, err := app.New(app.Options{HealthPath: p}); err == nil || !strings.Contains(err.Error(), "bad health path") {
			t.Errorf("HealthPath %q: New = %v, want an error", p, err)
		}
	}
}

func TestHealthCheckFails(t *testing.T) {
	var sick atomic.Bool
	sick.Store(true)
	s := serve(t, hello, app.Options{Health: func(ctx context.Context) error {
		if sick.Load() {
			return errors.New("database unreachable")
		}
		return nil
	}})
	code, h, _ := getHealth(t, s.url+app.DefaultHealthPath)
	if code != 503 || h.Status != "unhealthy" || h.Reason != "database unreachable" || h.PID != os.Getpid() {
		t.Fatalf("failing check: %d %+v, want 503 unhealthy with the reason", code, h)
	}
	if code, body := get(t, s.url+"/"); code != 200 || body != "hello\n" {
		t.Errorf("the handler with a failing check: %d %q, want it served", code, body)
	}
	sick.Store(false)
	if code, h, _ := getHealth(t, s.url+app.DefaultHealthPath); code != 200 || h.Status != "ok" || h.Reason != "" {
		t.Fatalf("recovered check: %d %+v", code, h)
	}
}

// TestHealthCheckGetsRequestContext: a check that hangs is released when the
// client gives up, so a hung dependency cannot pile up goroutines.
func TestHealthCheckGetsRequestContext(t *testing.T) {
	released := make(chan error, 1)
	s := serve(t, hello, app.Options{Health: func(ctx context.Context) error {
		<-ctx.Done()
		released <- ctx.Err()
		return ctx.Err()
	}})
	c := &http.Client{Timeout: 200 * time.Millisecond}
	if _, err := c.Get(s.url + app.DefaultHealthPath); err == nil {
		t.Fatal("a hanging check answered")
	}
	select {
	case err := <-released:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("check released with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the check was not released when the client left")
	}
}

func TestHandlerWithoutServe(t *testing.T) {
	t.Setenv(app.HealthPathEnv, "")
	a, err := app.New(app.Options{Version: "9", Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	srv := newTestServer(t, a.Handler(hello))
	if code, h, _ := getHealth(t, srv+app.DefaultHealthPath); code != 200 || h.Version != "9" || len(h.SHA256) != 64 {
		t.Fatalf("Handler's health: %d %+v", code, h)
	}
}
