package worker

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/lodis/lodis/internal/health"
)

func testHandlers() *handlers {
	return &handlers{cfg: &Config{IdleTimeout: 30 * time.Second, DrainTimeout: 10 * time.Second},
		started: time.Now().Add(-time.Minute), port: "8080",
		stats: func() (int64, uint64) { return 3, 42 }}
}

func TestEndpoints(t *testing.T) {
	h := testHandlers().mux()
	cases := []struct {
		method, path string
		code         int
		ctype, body  string
	}{
		{"GET", "/", 200, "text/html", "lodis on port 8080"},
		{"GET", "/__/time", 200, "text/plain", "T"},
		{"GET", "/__/health", 200, "application/json", `"status": "ok"`},
		{"GET", "/__/info", 200, "application/json", `"idle_timeout": "30s"`},
		{"HEAD", "/__/health", 200, "application/json", ""},
		{"POST", "/__/health", 405, "", ""},
		{"GET", "/nope", 404, "", ""},
	}
	for _, c := range cases {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(c.method, c.path, nil))
		if rec.Code != c.code {
			t.Errorf("%s %s = %d, want %d", c.method, c.path, rec.Code, c.code)
		}
		if !strings.HasPrefix(rec.Header().Get("Content-Type"), c.ctype) {
			t.Errorf("%s %s content type %q", c.method, c.path, rec.Header().Get("Content-Type"))
		}
		if !strings.Contains(rec.Body.String(), c.body) {
			t.Errorf("%s %s body lacks %q:\n%s", c.method, c.path, c.body, rec.Body)
		}
	}
}

func TestHealthJSON(t *testing.T) {
	rec := httptest.NewRecorder()
	testHandlers().mux().ServeHTTP(rec, httptest.NewRequest("GET", "/__/health", nil))
	var h health.Report
	if err := json.Unmarshal(rec.Body.Bytes(), &h); err != nil {
		t.Fatal(err)
	}
	if h.Port != "8080" || h.Requests != 42 || h.OpenConns != 3 || h.UptimeSeconds < 59 || len(h.SHA256) != 64 || h.PID == 0 {
		t.Fatalf("health = %+v", h)
	}
}

func TestHangHealthHook(t *testing.T) {
	h := testHandlers()
	h.hang.Store(true)
	srv := httptest.NewServer(h.mux())
	defer srv.Close()
	c := &http.Client{Timeout: 200 * time.Millisecond}
	if _, err := c.Get(srv.URL + "/__/health"); err == nil {
		t.Fatal("health answered with the hang hook set")
	}
	c.Timeout = 20 * time.Second // the time endpoint must answer, however busy the machine
	if resp, err := c.Get(srv.URL + "/__/time"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("time endpoint with the hang hook: %v", err)
	}
}
