package statushttp

import (
	"compress/gzip"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lodis/lodis/internal/events"
	"github.com/lodis/lodis/internal/metrics"
	"github.com/lodis/lodis/internal/statusapi"
	"github.com/lodis/lodis/internal/statuspage"
)

type fakeSup struct{}

func (fakeSup) Snapshot(context.Context) (statusapi.Snapshot, bool) {
	return statusapi.Snapshot{Connected: true, Instances: []statusapi.InstanceStatus{{Port: "8080", Socket: "active/listening", Worker: "inactive/dead"}}}, true
}

type holder struct{ calls atomic.Int32 }

func (h *holder) HoldWorkersFor(context.Context, string, time.Duration) error {
	h.calls.Add(1)
	return nil
}

// upstream runs a status API on a unix socket, as the supervisor does, and
// records every request that reaches it.
type upstream struct {
	socket string
	hold   *holder
	mu     sync.Mutex
	seen   []string // "METHOD PATH?QUERY"
	slow   chan struct{}
}

func startUpstream(t *testing.T) *upstream {
	t.Helper()
	u := &upstream{socket: filepath.Join(t.TempDir(), "s.sock"), hold: &holder{}}
	m := metrics.New()
	m.WatchPort("8080")
	api := &statusapi.Server{Sup: fakeSup{}, Events: events.New(10, nil), Metrics: m, Holder: u.hold}
	api.Handle("GET /{$}", &statuspage.Page{Status: api.Status, Host: "upstream-host"})
	h := api.Handler()
	l, err := net.Listen("unix", u.socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.seen = append(u.seen, r.Method+" "+r.URL.RequestURI())
		slow := u.slow
		u.mu.Unlock()
		if slow != nil {
			<-slow
		}
		h.ServeHTTP(w, r)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return u
}

func (u *upstream) requests() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.seen...)
}

func do(t *testing.T, method, url string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(`{"who":"x","seconds":60}`))
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	tr := &http.Transport{DisableCompression: true}
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r io.Reader = resp.Body
	if resp.Header.Get("Content-Encoding") == "gzip" {
		if r, err = gzip.NewReader(resp.Body); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := io.ReadAll(r)
	return resp, string(b)
}

// TestFrontServesTheReadOnlyRoutes: /metrics and the page come through,
// compressed when asked; nothing else reaches the supervisor, whatever the
// method or path.
func TestFrontServesTheReadOnlyRoutes(t *testing.T) {
	u := startUpstream(t)
	front := httptest.NewServer((&Front{Socket: u.socket}).Handler())
	defer front.Close()

	resp, body := do(t, "GET", front.URL+"/metrics")
	if resp.StatusCode != 200 || !strings.Contains(body, `lodis_worker_failures_total{port="8080"} 0`) || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Errorf("GET /metrics: %d %q\n%.300s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	resp, body = do(t, "GET", front.URL+"/metrics", "Accept-Encoding", "gzip")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Encoding") != "gzip" || !strings.Contains(body, "lodis_bus_connected") {
		t.Errorf("GET /metrics with gzip: %d %q", resp.StatusCode, resp.Header.Get("Content-Encoding"))
	}
	resp, body = do(t, "GET", front.URL+"/")
	if resp.StatusCode != 200 || !strings.Contains(body, "lodis on upstream-host") || !strings.Contains(body, `data-port="8080"`) ||
		!strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'none'") {
		t.Errorf("GET /: %d %v\n%.300s", resp.StatusCode, resp.Header, body)
	}
	if resp, _ := do(t, "HEAD", front.URL+"/metrics"); resp.StatusCode != 200 {
		t.Errorf("HEAD /metrics: %d", resp.StatusCode)
	}
	before := len(u.requests())
	for _, c := range []struct {
		method, path string
		code         int
	}{
		{"POST", "/v1/hold", 404}, {"DELETE", "/v1/hold", 404}, {"POST", "/v1/rollout", 404}, {"GET", "/v1/instances", 404},
		{"GET", "/v1/events", 404}, {"GET", "/metrics/../v1/instances", 404},
		{"POST", "/metrics", 405}, {"PUT", "/", 405}, {"DELETE", "/", 405}, {"OPTIONS", "/metrics", 405},
	} {
		resp, body := do(t, c.method, front.URL+c.path)
		if resp.StatusCode != c.code {
			t.Errorf("%s %s: %d %q, want %d", c.method, c.path, resp.StatusCode, body, c.code)
		}
		if c.code == 405 && resp.Header.Get("Allow") != "GET, HEAD" {
			t.Errorf("%s %s: Allow %q", c.method, c.path, resp.Header.Get("Allow"))
		}
	}
	if got := u.requests()[before:]; len(got) != 0 {
		t.Errorf("refused requests reached the supervisor: %q", got)
	}
	if n := u.hold.calls.Load(); n != 0 {
		t.Errorf("a hold was taken through the TCP front (%d)", n)
	}
	// A query is not passed on.
	do(t, "GET", front.URL+"/metrics?name[]=x&debug=1")
	if got := u.requests(); got[len(got)-1] != "GET /metrics" {
		t.Errorf("upstream saw %q", got[len(got)-1])
	}
}

// TestFrontWhenTheSupervisorIsDown: /metrics is 503 (a failed scrape), the
// page says the supervisor does not answer.
func TestFrontWhenTheSupervisorIsDown(t *testing.T) {
	front := httptest.NewServer((&Front{Socket: filepath.Join(t.TempDir(), "none.sock"), Timeout: 2 * time.Second}).Handler())
	defer front.Close()
	if resp, body := do(t, "GET", front.URL+"/metrics"); resp.StatusCode != 503 || !strings.Contains(body, "does not answer") {
		t.Errorf("GET /metrics: %d %q", resp.StatusCode, body)
	}
	resp, body := do(t, "GET", front.URL+"/")
	if resp.StatusCode != 503 || !strings.Contains(body, "The supervisor does not answer") || !strings.Contains(body, `http-equiv="refresh"`) {
		t.Errorf("GET /: %d\n%s", resp.StatusCode, body)
	}
}

// TestFrontBoundsTheWork: with every slot taken by a request the
// supervisor is slow to answer, another is refused after the queue time
// instead of piling on the supervisor.
func TestFrontBoundsTheWork(t *testing.T) {
	u := startUpstream(t)
	u.mu.Lock()
	u.slow = make(chan struct{})
	u.mu.Unlock()
	front := httptest.NewServer((&Front{Socket: u.socket, MaxInFlight: 1, Queue: 200 * time.Millisecond}).Handler())
	defer front.Close()
	first := make(chan int, 1)
	go func() {
		resp, _ := do(t, "GET", front.URL+"/metrics")
		first <- resp.StatusCode
	}()
	for len(u.requests()) == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	start := time.Now()
	resp, body := do(t, "GET", front.URL+"/")
	if took := time.Since(start); resp.StatusCode != 503 || !strings.Contains(body, "busy") || resp.Header.Get("Retry-After") != "1" || took > 2*time.Second {
		t.Errorf("a request beyond the slots: %d %q after %v, want 503 busy after about 200 ms", resp.StatusCode, body, took)
	}
	if got := u.requests(); len(got) != 1 {
		t.Errorf("the supervisor saw %q, want the first request alone", got)
	}
	close(u.slow)
	if code := <-first; code != 200 {
		t.Errorf("the slow request: %d", code)
	}
}
