package activation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Defaults used when the corresponding Server field is zero.
const (
	DefaultDrainTimeout   = 10 * time.Second
	DefaultIdleGrace      = time.Second
	DefaultStatusInterval = 2 * time.Second
)

// Server serves HTTP on listeners handed over by systemd (see Listeners),
// exits by itself when idle, and drains without losing a request when stopped.
//
// The zero value is not usable: Handler must be set. A Server serves once.
type Server struct {
	// Handler answers requests. Required.
	Handler http.Handler

	// IdleTimeout is how long Serve waits with no open connection before it
	// returns (idle exit). Under socket activation systemd keeps listening and
	// starts a fresh process on the next connection. Zero means never.
	IdleTimeout time.Duration

	// DrainTimeout bounds the drain after ctx is cancelled: open connections get
	// this long to finish. Keep it below the unit's TimeoutStopSec=. Default 10 s.
	DrainTimeout time.Duration

	// IdleGrace is how long, during a drain, a keep-alive connection may stay
	// idle before it is closed. A client that sends its next request within the
	// grace gets an answer with "Connection: close" instead of a reset. Default 1 s.
	IdleGrace time.Duration

	// HTTP, if set, is the template for the underlying http.Server: its limits
	// (ReadHeaderTimeout, MaxHeaderBytes, IdleTimeout, …) are copied; Handler and
	// ConnState are Server's own.
	HTTP *http.Server

	// Log receives lifecycle events (serving, draining, drained) through the
	// standard library's log/slog, so any logging library can take them.
	// Default: discard.
	Log *slog.Logger

	// Notifier receives sd_notify lines. Default: a SystemdNotifier (no-op
	// outside systemd).
	Notifier Notifier

	// Status, if set, adds text to the STATUS= line sent every StatusInterval.
	Status func() string

	// StatusInterval is how often STATUS= is refreshed. Default 2 s.
	StatusInterval time.Duration

	open     atomic.Int64 // connections accepted and not yet closed
	requests atomic.Uint64
	draining atomic.Bool
	wake     chan struct{}

	mu    sync.Mutex
	conns map[net.Conn]connInfo
}

type connInfo struct {
	state http.ConnState
	since time.Time
}

// Stats is a snapshot of a Server's counters.
type Stats struct {
	OpenConns int64  // connections open now
	Requests  uint64 // requests started since Serve began
	Draining  bool   // a drain or idle exit is under way
}

// Stats returns the current counters; safe to call from any goroutine.
func (s *Server) Stats() Stats {
	return Stats{OpenConns: s.open.Load(), Requests: s.requests.Load(), Draining: s.draining.Load()}
}

// Serve accepts connections on ls until ctx is cancelled or the server has
// been idle for IdleTimeout, then drains and returns.
//
// The order of steps on stop is: send STOPPING=1; close ls (under socket
// activation systemd's socket stays open and queues new connections for the
// next worker); answer every request that is in flight or that arrives on an
// open connection with "Connection: close"; close keep-alive connections that
// stay idle for IdleGrace; after DrainTimeout close whatever is still open.
// It returns nil after a clean drain or idle exit, and an error when a listener
// fails or connections had to be cut at the drain deadline.
func (s *Server) Serve(ctx context.Context, ls ...net.Listener) error {
	if s.Handler == nil {
		return errors.New("activation: Server.Handler is nil")
	}
	if len(ls) == 0 {
		return errors.New("activation: no listener to serve on")
	}
	s.defaults()
	hs := s.httpServer()
	serveErr := make(chan error, len(ls))
	for _, l := range ls {
		go func() { serveErr <- hs.Serve(l) }()
	}
	s.notify("READY=1\nSTATUS=" + s.statusLine("serving"))
	s.Log.Info("serving", "listeners", addrs(ls))

	reason, err := s.run(ctx, serveErr)
	if err != nil {
		s.closeListeners(ls)
		hs.Close()
		return err
	}
	return s.drain(hs, ls, reason)
}

func (s *Server) defaults() {
	if s.DrainTimeout <= 0 {
		s.DrainTimeout = DefaultDrainTimeout
	}
	if s.IdleGrace <= 0 {
		s.IdleGrace = DefaultIdleGrace
	}
	if s.StatusInterval <= 0 {
		s.StatusInterval = DefaultStatusInterval
	}
	if s.Log == nil {
		s.Log = slog.New(slog.DiscardHandler)
	}
	if s.Notifier == nil {
		s.Notifier = &SystemdNotifier{Log: s.Log}
	}
	s.wake = make(chan struct{}, 1)
	s.conns = make(map[net.Conn]connInfo)
}

func (s *Server) httpServer() *http.Server {
	hs := &http.Server{}
	if s.HTTP != nil {
		hs.ReadTimeout = s.HTTP.ReadTimeout
		hs.ReadHeaderTimeout = s.HTTP.ReadHeaderTimeout
		hs.WriteTimeout = s.HTTP.WriteTimeout
		hs.IdleTimeout = s.HTTP.IdleTimeout
		hs.MaxHeaderBytes = s.HTTP.MaxHeaderBytes
		hs.ErrorLog = s.HTTP.ErrorLog
		hs.BaseContext = s.HTTP.BaseContext
	}
	hs.Handler = http.HandlerFunc(s.serveHTTP)
	hs.ConnState = s.connState
	return hs
}

// serveHTTP counts the request and, once a drain has begun, asks net/http to
// close the connection after this response (a handler-set "Connection: close"
// is honoured). Unlike http.Server.SetKeepAlivesEnabled(false), this does not
// close idle connections that a client may be writing to right now.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	if s.draining.Load() {
		w.Header().Set("Connection", "close")
		s.Handler.ServeHTTP(w, r)
		return
	}
	// The drain may begin while this request is in flight: decide at the
	// moment the header goes out.
	s.Handler.ServeHTTP(&drainWriter{ResponseWriter: w, draining: &s.draining}, r)
}

// drainWriter adds "Connection: close" to a response whose header is written
// after a drain has begun.
type drainWriter struct {
	http.ResponseWriter
	draining    *atomic.Bool
	wroteHeader bool
}

func (d *drainWriter) WriteHeader(code int) {
	if !d.wroteHeader {
		d.wroteHeader = true
		if d.draining.Load() {
			d.ResponseWriter.Header().Set("Connection", "close")
		}
	}
	d.ResponseWriter.WriteHeader(code)
}

func (d *drainWriter) Write(b []byte) (int, error) {
	if !d.wroteHeader {
		d.WriteHeader(http.StatusOK)
	}
	return d.ResponseWriter.Write(b)
}

// Flush implements http.Flusher when the underlying writer does.
func (d *drainWriter) Flush() {
	if !d.wroteHeader {
		d.WriteHeader(http.StatusOK)
	}
	if f, ok := d.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (d *drainWriter) Unwrap() http.ResponseWriter { return d.ResponseWriter }

func (s *Server) connState(c net.Conn, st http.ConnState) {
	s.mu.Lock()
	switch st {
	case http.StateNew:
		s.conns[c] = connInfo{state: st, since: time.Now()}
		s.mu.Unlock()
		if s.open.Add(1) == 1 {
			s.poke()
		}
		return
	case http.StateClosed, http.StateHijacked:
		_, known := s.conns[c]
		delete(s.conns, c)
		s.mu.Unlock()
		if known && s.open.Add(-1) == 0 {
			s.poke()
		}
		return
	default:
		if _, ok := s.conns[c]; ok {
			s.conns[c] = connInfo{state: st, since: time.Now()}
		}
	}
	s.mu.Unlock()
}

// poke wakes the owner goroutine without blocking the connection goroutine.
func (s *Server) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

type stopReason string

const (
	stopRequested stopReason = "stop requested"
	stopIdle      stopReason = "idle"
)

// run is the owner loop while serving: it alone arms the idle timer, refreshes
// STATUS= and pings the watchdog.
func (s *Server) run(ctx context.Context, serveErr <-chan error) (stopReason, error) {
	idle := time.NewTimer(time.Hour)
	idle.Stop()
	armIdle := func() {
		if s.IdleTimeout > 0 && s.open.Load() == 0 {
			idle.Reset(s.IdleTimeout)
		} else {
			idle.Stop()
		}
	}
	armIdle()
	status := time.NewTicker(s.StatusInterval)
	defer status.Stop()
	var watchdog <-chan time.Time
	if wd, err := daemon.SdWatchdogEnabled(false); err == nil && wd > 0 {
		t := time.NewTicker(wd / 2)
		defer t.Stop()
		watchdog = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return stopRequested, nil
		case err := <-serveErr:
			return "", fmt.Errorf("serve: %w", err)
		case <-s.wake:
			armIdle()
		case <-idle.C:
			if s.open.Load() == 0 {
				return stopIdle, nil
			}
		case <-status.C:
			s.notify("STATUS=" + s.statusLine("serving"))
		case <-watchdog:
			s.notify("WATCHDOG=1")
		}
	}
}

func (s *Server) drain(hs *http.Server, ls []net.Listener, reason stopReason) error {
	s.draining.Store(true)
	start := time.Now()
	log := s.Log.With("reason", string(reason))
	s.notify("STOPPING=1\nSTATUS=" + s.statusLine("draining ("+string(reason)+")"))
	s.closeListeners(ls)
	log.Info("draining", "open_conns", s.open.Load())

	deadline := time.NewTimer(s.DrainTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(s.IdleGrace / 4)
	defer tick.Stop()
	for s.open.Load() > 0 {
		select {
		case <-s.wake:
		case <-tick.C:
			s.closeIdle(start)
		case <-deadline.C:
			n := s.open.Load()
			hs.Close()
			log.Warn("drain deadline reached; closing open connections", "cut_conns", n)
			return fmt.Errorf("drain deadline %s reached with %d connections open", s.DrainTimeout, n)
		}
	}
	hs.Close()
	log.Info("drained", "took", time.Since(start).Round(time.Millisecond), "requests", s.requests.Load())
	return nil
}

// closeIdle closes keep-alive connections that have been idle for IdleGrace
// since the later of the drain start and their last request.
func (s *Server) closeIdle(drainStart time.Time) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for c, ci := range s.conns {
		since := ci.since
		if since.Before(drainStart) {
			since = drainStart
		}
		if (ci.state == http.StateIdle || ci.state == http.StateNew) && now.Sub(since) >= s.IdleGrace {
			c.Close()
		}
	}
}

func (s *Server) closeListeners(ls []net.Listener) {
	for _, l := range ls {
		l.Close()
	}
}

func (s *Server) statusLine(what string) string {
	st := s.Stats()
	line := fmt.Sprintf("%s; %d connections, %d requests", what, st.OpenConns, st.Requests)
	if s.Status != nil {
		if extra := s.Status(); extra != "" {
			line += "; " + extra
		}
	}
	return line
}

func (s *Server) notify(state string) {
	s.Notifier.Notify(state)
}

func addrs(ls []net.Listener) []string {
	out := make([]string, len(ls))
	for i, l := range ls {
		out[i] = l.Addr().String()
	}
	return out
}
