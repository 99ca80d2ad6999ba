package app_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/lodis/lodis/app"
)

var quiet = slog.New(slog.DiscardHandler)

// served is an App serving on a loopback listener in this process.
type served struct {
	app  *app.App
	addr string
	url  string
	stop context.CancelFunc
	done chan error
}

// serve starts opts (with a fresh 127.0.0.1 listener unless opts.Listeners
// or opts.Listen says otherwise) and stops it when the test ends.
func serve(t *testing.T, h http.Handler, opts app.Options) *served {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quiet
	}
	if len(opts.Listeners) == 0 && opts.Listen == "" {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		opts.Listeners = []net.Listener{l}
	}
	a, err := app.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	s := &served{app: a, stop: stop, done: make(chan error, 1)}
	if len(opts.Listeners) > 0 {
		s.addr = opts.Listeners[0].Addr().String()
	} else {
		s.addr = opts.Listen
	}
	s.url = "http://" + s.addr
	go func() { s.done <- a.Serve(ctx, h) }()
	t.Cleanup(func() {
		stop()
		s.wait(t, 15*time.Second)
	})
	return s
}

// wait returns what Serve returned, failing the test if it takes longer than within.
func (s *served) wait(t *testing.T, within time.Duration) error {
	t.Helper()
	select {
	case err := <-s.done:
		s.done <- err
		return err
	case <-time.After(within):
		t.Fatalf("Serve still running after %s", within)
		return nil
	}
}

var hello = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello\n") })

// getHealth fetches and decodes the health report at url.
func getHealth(t *testing.T, url string) (int, app.Health, http.Header) {
	t.Helper()
	code, body, hdr := fetch(t, url)
	var h app.Health
	if err := json.Unmarshal([]byte(body), &h); err != nil {
		t.Fatalf("GET %s: %d, body not JSON: %v\n%s", url, code, err, body)
	}
	return code, h, hdr
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	code, body, _ := fetch(t, url)
	return code, body
}

// fetch GETs url on a connection of its own.
func fetch(t *testing.T, url string) (int, string, http.Header) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// fileSHA256 hashes a file independently of package app.
func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// rawRequest sends one HTTP/1.1 keep-alive request on c and reads the status
// line, within d.
func rawRequest(c net.Conn, r *bufio.Reader, d time.Duration) (string, error) {
	c.SetDeadline(time.Now().Add(d))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		return "", err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.Status, nil
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10 s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func newTestServer(t *testing.T, h http.Handler) string {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}
