package app_test

import (
	"bufio"
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lodis/lodis/app"
)

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// peakConns samples the App's open connections until stop is closed and
// returns the highest count seen.
func peakConns(a *app.App, stop <-chan struct{}) <-chan int64 {
	out := make(chan int64, 1)
	go func() {
		var peak int64
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			if n := a.Stats().OpenConns; n > peak {
				peak = n
			}
			select {
			case <-stop:
				out <- peak
				return
			case <-t.C:
			}
		}
	}()
	return out
}

// waiting is a connection that sent a request and got no answer yet.
type waiting struct {
	net.Conn
	r *bufio.Reader
}

// queued connects to addr and sends a request, which must not be answered
// within d: the connection waits in the accept queue. what names it.
func queued(t *testing.T, addr string, d time.Duration, what string) *waiting {
	t.Helper()
	c, err := net.Dial("tcp", addr) // the kernel completes the handshake by itself
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	w := &waiting{Conn: c, r: bufio.NewReader(c)}
	c.SetReadDeadline(time.Now().Add(d))
	if _, err := w.r.Peek(1); err == nil {
		t.Fatalf("%s: served, want it queued", what)
	}
	return w
}

// served fails unless the waiting request is answered 200 within 10 s.
func (w *waiting) served(t *testing.T, what string) {
	t.Helper()
	w.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(w.r, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("%s: %v, want 200", what, err)
	}
	resp.Body.Close()
}

// TestMaxConnsCap: with MaxConns open connections, the next one is not
// served, only queued, until one of them closes; then it is served.
func TestMaxConnsCap(t *testing.T) {
	var logs syncBuffer
	s := serve(t, hello, app.Options{MaxConns: 2, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	var open []net.Conn
	for i := range 2 {
		c, err := net.Dial("tcp", s.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if st, err := rawRequest(c, bufio.NewReader(c), 10*time.Second); err != nil || st != "200 OK" {
			t.Fatalf("connection %d: %q %v", i+1, st, err)
		}
		open = append(open, c)
	}
	third := queued(t, s.addr, 500*time.Millisecond, "the third connection with MaxConns=2 and two connections open")
	if n := s.app.Stats().OpenConns; n != 2 {
		t.Errorf("open connections %d, want 2", n)
	}
	open[0].Close()
	third.served(t, "the third connection after one closed")
	if !contains(logs.String(), "connection limit reached") || !contains(logs.String(), "max_conns=2") {
		t.Errorf("no warning that the limit was reached; log:\n%s", logs.String())
	}
}

// TestFloodOfIdleConnections: 5,000 connections that send nothing hold the
// default cap of 4,096 and queue the rest, and a real client waits; once the
// flood ends the port serves again at once.
func TestFloodOfIdleConnections(t *testing.T) {
	const flood = 5000
	s := serve(t, hello, app.Options{})
	stop := make(chan struct{})
	peak := peakConns(s.app, stop)
	conns := make([]net.Conn, flood)
	var failed atomic.Int64
	var wg sync.WaitGroup
	jobs := make(chan int)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				c, err := net.DialTimeout("tcp", s.addr, 5*time.Second)
				if err != nil {
					failed.Add(1)
					continue
				}
				conns[i] = c
			}
		}()
	}
	for i := range flood {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	closeFlood := func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}
	defer closeFlood()
	if n := failed.Load(); n > 0 {
		t.Logf("%d of %d flood connections could not connect (accept queue full)", n, flood)
	}
	waitFor(t, "the cap filled", func() bool { return s.app.Stats().OpenConns == app.DefaultMaxConns })

	client := queued(t, s.addr, 300*time.Millisecond, "a client while the flood holds every slot")
	floodEnd := time.Now()
	closeFlood()
	client.served(t, "the queued client after the flood")
	t.Logf("queued client served %s after the flood ended", time.Since(floodEnd).Round(time.Millisecond))
	if code, _ := get(t, s.url+"/"); code != 200 {
		t.Fatalf("fresh client after the flood: %d", code)
	}
	close(stop)
	if p := <-peak; p > app.DefaultMaxConns {
		t.Errorf("peak open connections %d, over the cap %d", p, app.DefaultMaxConns)
	}
}

// TestSlowlorisLosesItsSlots: connections that send a request header a byte
// short and then nothing, and never close, hold their slots only for
// ReadHeaderTimeout: a real client queued behind them is served although
// the attacker never stops.
func TestSlowlorisLosesItsSlots(t *testing.T) {
	const maxConns, attackers = 50, 150
	s := serve(t, hello, app.Options{MaxConns: maxConns, HTTP: &http.Server{ReadHeaderTimeout: 300 * time.Millisecond}})
	stop := make(chan struct{})
	peak := peakConns(s.app, stop)
	for range attackers {
		c, err := net.DialTimeout("tcp", s.addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n")
	}
	start := time.Now()
	client, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	st, err := rawRequest(client, bufio.NewReader(client), 20*time.Second)
	if err != nil || st != "200 OK" {
		t.Fatalf("client behind %d slowloris connections: %q %v", attackers, st, err)
	}
	took := time.Since(start)
	t.Logf("client behind %d slowloris connections (cap %d) served in %s", attackers, maxConns, took.Round(time.Millisecond))
	if took < 300*time.Millisecond {
		t.Errorf("served in %s: sooner than one ReadHeaderTimeout, the attackers did not hold the cap", took)
	}
	close(stop)
	if p := <-peak; p > maxConns {
		t.Errorf("peak open connections %d, over the cap %d", p, maxConns)
	}
}
