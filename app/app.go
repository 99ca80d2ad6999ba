package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/lodis/lodis/activation"
)

// App is a service being served: its options with the defaults applied, its
// counters and its health report. Make one with New; it serves once.
type App struct {
	cfg     *config
	srv     *activation.Server
	lim     *limiter // nil without a cap
	started time.Time
	port    atomic.Pointer[string] // the reported port, known once Serve has its listeners
	served  atomic.Bool
}

// New checks opts, applies the defaults and starts hashing the executable in
// the background (see SHA256). It reads $LODIS_HEALTH_PATH and $LODIS_PORT
// now, and takes no socket yet: Serve does. It fails on a health path that is
// not an absolute path, or a negative duration.
func New(opts Options) (*App, error) {
	cfg, err := resolve(opts)
	if err != nil {
		return nil, err
	}
	go func() {
		if _, err := SHA256(); err != nil {
			cfg.Logger.Warn("the health report will carry no sha256", "error", err)
		}
	}()
	a := &App{cfg: cfg, started: time.Now()}
	if cfg.MaxConns > 0 {
		a.lim = newLimiter(cfg.MaxConns, cfg.Logger)
	}
	a.port.Store(&cfg.Port)
	a.srv = &activation.Server{
		IdleTimeout:  cfg.IdleTimeout,
		DrainTimeout: cfg.DrainTimeout,
		IdleGrace:    cfg.IdleGrace,
		HTTP:         cfg.http,
		Log:          cfg.Logger,
	}
	return a, nil
}

// Run serves h as New(opts) and Serve would, until ctx is done, the process
// receives SIGTERM (systemd's stop) or SIGINT (Ctrl-C), or the app has been
// idle for Options.IdleTimeout. It returns nil after a clean stop.
func Run(ctx context.Context, h http.Handler, opts Options) error {
	a, err := New(opts)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, os.Interrupt)
	defer stop()
	return a.Serve(ctx, h)
}

// Serve takes the listening sockets (Options.Listeners, else the sockets
// systemd passed, else Options.Listen) and serves Handler(h) on them, with at
// most Options.MaxConns connections open, until ctx is done or the app has
// been idle for Options.IdleTimeout. It then drains and returns nil; the
// order of steps is activation.Server.Serve's: STOPPING=1, the listeners
// closed (under socket activation systemd keeps its socket and queues new
// connections for the next process), requests in flight and the next request
// on each open connection answered with "Connection: close", idle keep-alive
// connections closed after Options.IdleGrace, whatever is left cut at
// Options.DrainTimeout (logged, still a clean stop). It sends READY=1 once
// serving, and STATUS= every 2 s; outside systemd these do nothing.
//
// It returns an error, having served nothing, when h is nil, when Serve was
// called before, or when the sockets cannot be had: LISTEN_FDS or LISTEN_PID
// malformed or meant for another process, a passed descriptor that is not a
// listening stream socket, no socket named Options.SocketName, no
// LISTEN_FDS and no Options.Listen (activation.ErrNotActivated), or Listen
// not bindable. It also returns an error when a listener fails while serving.
func (a *App) Serve(ctx context.Context, h http.Handler) error {
	if h == nil {
		return errors.New("app: handler is nil")
	}
	if !a.served.CompareAndSwap(false, true) {
		return errors.New("app: Serve called twice; an App serves once")
	}
	ls := a.cfg.Listeners
	if len(ls) == 0 {
		var err error
		if ls, err = activation.Listeners(a.cfg.SocketName, a.cfg.Listen); err != nil {
			return err
		}
	}
	if *a.port.Load() == "" {
		if _, p, err := net.SplitHostPort(ls[0].Addr().String()); err == nil {
			a.port.Store(&p)
		}
	}
	if a.lim != nil {
		capped := make([]net.Listener, len(ls))
		for i, l := range ls {
			capped[i] = &limitListener{Listener: l, lim: a.lim, done: make(chan struct{})}
		}
		ls = capped
	}
	a.srv.Handler = a.Handler(h)
	a.cfg.Logger.Info("starting", "name", a.cfg.Name, "version", a.cfg.Version, "pid", os.Getpid(),
		"port", *a.port.Load(), "health_path", a.cfg.HealthPath, "max_conns", a.cfg.MaxConns,
		"idle_timeout", a.cfg.IdleTimeout.String(), "drain_timeout", a.cfg.DrainTimeout.String())
	err := a.srv.Serve(ctx, ls...)
	if err != nil && a.srv.Stats().Draining {
		// Connections cut at the drain deadline: activation logged them; the
		// stop itself went as it should.
		return nil
	}
	if err != nil {
		return fmt.Errorf("app: %w", err)
	}
	return nil
}

// Handler is the handler Serve serves: a GET or HEAD of the health path
// answers the health report (another method on it: 405), every other
// request goes to h. Use it to test a service with net/http/httptest; the
// counters in the report move only under Serve.
func (a *App) Handler(h http.Handler) http.Handler {
	path := a.cfg.HealthPath
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == path {
			a.serveHealth(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// Health returns the report the health path answers while healthy. It
// waits for the executable's hash if that is still being computed (once, a
// few milliseconds); SHA256 is empty if it could not be computed. Safe to
// call from any goroutine, before, during and after Serve.
func (a *App) Health() Health {
	sum, err := SHA256()
	if err != nil {
		sum = ""
	}
	st := a.Stats()
	return Health{
		Status: "ok", Name: a.cfg.Name, PID: os.Getpid(), Version: a.cfg.Version, Commit: a.cfg.Commit,
		SHA256: sum, Port: *a.port.Load(), UptimeSeconds: time.Since(a.started).Seconds(),
		Requests: st.Requests, OpenConns: st.OpenConns, Started: a.started.UTC().Format(time.RFC3339Nano),
	}
}

// Stats returns the connection and request counters without waiting for
// anything: what a page or a log line can show cheaply. Under a cap,
// OpenConns counts the connections holding a place in it, so it never
// exceeds MaxConns. Safe to call from any goroutine.
func (a *App) Stats() activation.Stats {
	st := a.srv.Stats()
	if a.lim != nil {
		st.OpenConns = a.lim.open.Load()
	}
	return st
}

// HealthPath is the path the health report is served on, after defaults.
func (a *App) HealthPath() string { return a.cfg.HealthPath }
