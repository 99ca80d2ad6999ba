package worker

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/lodis/lodis/app"
	"github.com/lodis/lodis/internal/health"
)

// discardWriter is the cheapest http.ResponseWriter: it keeps the header map
// and counts the body bytes, so a benchmark measures the handler only.
type discardWriter struct {
	h http.Header
	n int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(b []byte) (int, error) { w.n += len(b); return len(b), nil }
func (w *discardWriter) WriteHeader(int)             {}

// benchHandlers is the worker as Run builds it, not serving: the handler
// app.App serves, around the worker's mux.
func benchHandlers(b *testing.B) (*handlers, http.Handler) {
	cfg := testConfig()
	h := &handlers{cfg: cfg, activated: true, started: time.Now().Add(-time.Minute), port: cfg.Port}
	a, err := app.New(app.Options{Name: "lodis", Port: cfg.Port, HealthPath: health.Path, Health: h.check})
	if err != nil {
		b.Fatal(err)
	}
	h.app = a
	app.SHA256() // hashed once per process; keep it out of the loop
	return h, a.Handler(h.mux())
}

// BenchmarkHandlers measures each endpoint as a request reaches it through
// app's handler: routing, the snapshot of counters and build information,
// and the encoding of the body. /__/health is the one the supervisor and the
// upgrade roll-out poll.
func BenchmarkHandlers(b *testing.B) {
	_, mux := benchHandlers(b)
	for _, path := range []string{"/__/health", "/__/info", "/__/time", "/"} {
		b.Run(path, func(b *testing.B) {
			req := httptest.NewRequest(http.MethodGet, path, nil)
			w := &discardWriter{h: make(http.Header)}
			b.ReportAllocs()
			for b.Loop() {
				clear(w.h)
				w.n = 0
				mux.ServeHTTP(w, req)
			}
			if w.n == 0 {
				b.Fatalf("%s wrote no body", path)
			}
			b.SetBytes(int64(w.n))
		})
	}
}

// BenchmarkHealthSnapshot measures the health data alone, without routing
// or JSON: what a status line or an in-process check would pay.
func BenchmarkHealthSnapshot(b *testing.B) {
	h, _ := benchHandlers(b)
	b.ReportAllocs()
	for b.Loop() {
		_ = h.app.Health()
	}
}
