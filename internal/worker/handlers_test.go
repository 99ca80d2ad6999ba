package worker

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/lodis/lodis/internal/buildinfo"
	"github.com/lodis/lodis/internal/health"
)

// serveWorker runs the worker as `lodis serve` does, on a loopback port, and
// returns its base URL; it is drained when the test ends.
func serveWorker(t *testing.T, cfg *Config, activated bool) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, []net.Listener{l}, activated, log) }()
	t.Cleanup(func() {
		stop()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("worker did not stop within 10 s")
		}
	})
	return "http://" + l.Addr().String()
}

func testConfig() *Config {
	return &Config{Port: "8080", IdleTimeout: 30 * time.Second, DrainTimeout: 2 * time.Second,
		IdleGrace: 100 * time.Millisecond, HealthPath: health.Path}
}

func TestEndpoints(t *testing.T) {
	url := serveWorker(t, testConfig(), true)
	c := &http.Client{Timeout: 10 * time.Second}
	cases := []struct {
		method, path string
		code         int
		ctype, body  string
	}{
		{"GET", "/", 200, "text/html", "lodis on port 8080"},
		{"GET", "/__/time", 200, "text/plain", "T"},
		{"GET", "/__/health", 200, "application/json", `"status":"ok"`},
		{"GET", "/__/info", 200, "application/json", `"idle_timeout": "30s"`},
		{"HEAD", "/__/health", 200, "application/json", ""},
		{"POST", "/__/health", 405, "", ""},
		{"GET", "/nope", 404, "", ""},
	}
	for _, tc := range cases {
		req, _ := http.NewRequest(tc.method, url+tc.path, nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", tc.method, tc.path, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code {
			t.Errorf("%s %s = %d, want %d", tc.method, tc.path, resp.StatusCode, tc.code)
		}
		if !strings.HasPrefix(resp.Header.Get("Content-Type"), tc.ctype) {
			t.Errorf("%s %s content type %q", tc.method, tc.path, resp.Header.Get("Content-Type"))
		}
		if !strings.Contains(string(b), tc.body) {
			t.Errorf("%s %s body lacks %q:\n%s", tc.method, tc.path, tc.body, b)
		}
	}
}

func TestHealthJSON(t *testing.T) {
	url := serveWorker(t, testConfig(), true)
	http.Get(url + "/") // one request before the check, to see it counted
	h, _, err := (&health.Client{Timeout: 10 * time.Second}).GetURL(context.Background(), url+health.Path)
	if err != nil {
		t.Fatal(err)
	}
	sum, _ := buildinfo.SHA256()
	if h.Status != "ok" || h.Port != "8080" || h.Requests < 2 || h.OpenConns < 1 || h.PID == 0 ||
		h.SHA256 != sum || h.Version != buildinfo.Version || h.Commit != buildinfo.Commit || h.Name != "lodis" {
		t.Fatalf("health = %+v, want ok on port 8080 with sha256 %s and two requests counted", h, sum)
	}
	if _, err := time.Parse(time.RFC3339Nano, h.Started); err != nil {
		t.Errorf("started %q: %v", h.Started, err)
	}
}

// TestServeUnhealthyFault: with the test fault, a socket-activated worker
// answers 503 and says why; one serving a plain address (selftest) does not.
func TestServeUnhealthyFault(t *testing.T) {
	defer func(f string) { buildinfo.TestFault = f }(buildinfo.TestFault)
	buildinfo.TestFault = buildinfo.FaultServeUnhealthy
	c := &health.Client{Timeout: 10 * time.Second}
	_, _, err := c.GetURL(context.Background(), serveWorker(t, testConfig(), true)+health.Path)
	var se *health.StatusError
	if !errors.As(err, &se) || se.Status != "503 Service Unavailable" || !strings.Contains(se.Body, `"reason":"test fault serve-unhealthy"`) {
		t.Fatalf("activated worker with the fault: %v, want 503 with the fault as reason", err)
	}
	if _, _, err := c.GetURL(context.Background(), serveWorker(t, testConfig(), false)+health.Path); err != nil {
		t.Fatalf("worker on a plain address with the fault: %v, want healthy", err)
	}
}

func TestHangHealthHook(t *testing.T) {
	cfg := testConfig()
	cfg.TestHangHealth = true
	url := serveWorker(t, cfg, true)
	c := &http.Client{Timeout: 200 * time.Millisecond}
	if _, err := c.Get(url + "/__/health"); err == nil {
		t.Fatal("health answered with the hang hook set")
	}
	c.Timeout = 20 * time.Second // the time endpoint must answer, however busy the machine
	if resp, err := c.Get(url + "/__/time"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("time endpoint with the hang hook: %v", err)
	}
}

// TestHealthPathFromEnv: app.conf's HEALTH_PATH= reaches `lodis serve` as
// $LODIS_HEALTH_PATH, and the report moves there.
func TestHealthPathFromEnv(t *testing.T) {
	t.Setenv("LODIS_HEALTH_PATH", "/healthz")
	cfg := testConfig()
	cfg.HealthPath = ""
	url := serveWorker(t, cfg, true)
	var h health.Report
	resp, err := http.Get(url + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil || h.Status != "ok" {
		t.Fatalf("/healthz: %v %+v", err, h)
	}
	if resp, err := http.Get(url + "/__/health"); err != nil || resp.StatusCode != 404 {
		t.Fatalf("/__/health with LODIS_HEALTH_PATH=/healthz: %v, want 404", err)
	}
}
