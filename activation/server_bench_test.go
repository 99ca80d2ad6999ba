package activation

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
)

// discardWriter is the cheapest http.ResponseWriter: it keeps the header map
// and nothing else, so a benchmark measures the code under test only.
type discardWriter struct {
	h    http.Header
	code int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *discardWriter) WriteHeader(code int)        { w.code = code }

var hello = []byte("hello\n")

var helloHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(hello) })

func benchServer() *Server {
	s := &Server{Handler: helloHandler, Notifier: nopNotifier{}}
	s.defaults()
	return s
}

// BenchmarkServeHTTP measures what Server adds to every request: the request
// counter, the drain check and, while serving, the drainWriter that decides
// on "Connection: close" when the header goes out. "bare" calls the handler
// alone, for the difference.
func BenchmarkServeHTTP(b *testing.B) {
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	for _, c := range []struct {
		name  string
		serve func(http.ResponseWriter, *http.Request)
	}{
		{"bare", helloHandler},
		{"serving", benchServer().serveHTTP},
		{"draining", func() func(http.ResponseWriter, *http.Request) {
			s := benchServer()
			s.draining.Store(true)
			return s.serveHTTP
		}()},
	} {
		b.Run(c.name, func(b *testing.B) {
			w := &discardWriter{h: make(http.Header)}
			b.ReportAllocs()
			for b.Loop() {
				clear(w.h)
				c.serve(w, req)
			}
		})
	}
}

// benchConn stands for a connection in the bookkeeping map; only its identity
// matters. The field keeps each one a distinct pointer.
type benchConn struct {
	net.Conn
	_ byte
}

// BenchmarkConnState measures the per-connection bookkeeping of one keep-alive
// connection's life: accepted, one request, idle, closed. "parallel" has
// every goroutine do the same on its own connection, contending for the lock.
func BenchmarkConnState(b *testing.B) {
	life := func(s *Server, c net.Conn) {
		s.connState(c, http.StateNew)
		s.connState(c, http.StateActive)
		s.connState(c, http.StateIdle)
		s.connState(c, http.StateClosed)
	}
	b.Run("serial", func(b *testing.B) {
		s, c := benchServer(), &benchConn{}
		b.ReportAllocs()
		for b.Loop() {
			life(s, c)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		s := benchServer()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			c := &benchConn{}
			for pb.Next() {
				life(s, c)
			}
		})
	})
}

// BenchmarkRoundTrip measures a whole keep-alive request over loopback, client
// included, served by Server ("lodis") and by a bare http.Server ("net-http")
// with the same handler: the ratio is what Server costs end to end.
// Allocations count both sides, since both run in this process.
func BenchmarkRoundTrip(b *testing.B) {
	for _, c := range []struct {
		name  string
		serve func(ctx context.Context, l net.Listener) error
	}{
		{"lodis", func(ctx context.Context, l net.Listener) error {
			return (&Server{Handler: helloHandler, Notifier: nopNotifier{}}).Serve(ctx, l)
		}},
		{"net-http", func(ctx context.Context, l net.Listener) error {
			hs := &http.Server{Handler: helloHandler}
			go func() { <-ctx.Done(); hs.Close() }()
			return hs.Serve(l)
		}},
	} {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { c.serve(ctx, l); close(done) }()
		tr := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 64, DisableCompression: true}
		url := "http://" + l.Addr().String() + "/"
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					req, err := http.NewRequest(http.MethodGet, url, nil)
					if err != nil {
						b.Error(err)
						return
					}
					resp, err := tr.RoundTrip(req)
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
		})
		// Close the client's idle connections first, so that Server's drain
		// does not wait out its idle grace.
		tr.CloseIdleConnections()
		cancel()
		<-done
	}
}
