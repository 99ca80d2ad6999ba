package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/lodis/lodis/activation"
)

// Environment variables lodis sets for every app (see docs/apps.md).
const (
	// HealthPathEnv names the health path the supervisor and roll-outs
	// check, as app.conf's HEALTH_PATH= says.
	HealthPathEnv = "LODIS_HEALTH_PATH"
	// PortEnv names the port the worker serves, e.g. "8080".
	PortEnv = "LODIS_PORT"
)

// Defaults used when the corresponding Options field is zero.
const (
	DefaultHealthPath        = "/__/health"
	DefaultMaxConns          = 4096
	DefaultReadHeaderTimeout = 5 * time.Second
	DefaultReadTimeout       = 30 * time.Second
	DefaultWriteTimeout      = 30 * time.Second
	DefaultKeepAliveTimeout  = 60 * time.Second
	DefaultMaxHeaderBytes    = 16 << 10
	DefaultDrainTimeout      = activation.DefaultDrainTimeout
)

// Options says how an App serves. The zero value is usable: it serves the
// sockets systemd passes, answers the health check at $LODIS_HEALTH_PATH or
// DefaultHealthPath, never exits when idle, and drains within 10 s.
type Options struct {
	// Name is the service's name, reported as "name" in the health report and
	// logged at start. Default: the base name of the executable.
	Name string

	// Version is reported as "version" in the health report. Default: the
	// main module's version from the build information (debug.ReadBuildInfo;
	// the go command stamps it from the VCS tag, or a pseudo-version), or
	// "dev" when there is none. To give a release a version of its own, set
	// a variable with -ldflags "-X main.version=1.2.3" and pass it here, as
	// examples/hello does.
	Version string

	// Commit is reported as "commit". Default: the vcs.revision the go command
	// recorded, with "+dirty" when the tree had changes; empty when there is none.
	Commit string

	// HealthPath is where the health report is served, e.g. "/__/health". It
	// must start with "/" and hold no query, fragment or space. Default:
	// $LODIS_HEALTH_PATH, which lodis sets from app.conf's HEALTH_PATH=, or
	// DefaultHealthPath.
	HealthPath string

	// Health, if set, is the service's own check (a database ping, a warm
	// cache), run on every health request with that request's context, which
	// ends when the client gives up (lodis waits HEALTH_TIMEOUT=, default
	// 2 s). A non-nil error answers 503 with status "unhealthy" and the error
	// text as "reason": a roll-out then rolls back, and the supervisor
	// restarts a worker that stays unhealthy. Default: always healthy.
	Health func(ctx context.Context) error

	// Port is reported as "port". Default: $LODIS_PORT, else the port of the
	// first listener.
	Port string

	// Listen is the address to bind, e.g. "127.0.0.1:8080", when the process
	// was not socket-activated (LISTEN_FDS unset): run by hand, or by a unit
	// without a socket. Empty: Serve then fails with activation.ErrNotActivated.
	Listen string

	// SocketName serves only the passed sockets whose FileDescriptorName=
	// equals it (lodis names the port's socket "http"). Default: every
	// passed socket.
	SocketName string

	// Listeners, if set, are served instead of the sockets systemd passed;
	// Listen and SocketName are then not used. Serve closes them when it
	// stops serving. For tests and self-checks, or sockets got some other way.
	Listeners []net.Listener

	// IdleTimeout makes Serve return after this long with no open
	// connection; under socket activation systemd keeps the socket and starts
	// the service again on the next connection. Zero (the default) means
	// never: under lodis, IDLE_TIMEOUT= in app.conf stops an idle worker from
	// outside, for an app in any language. Must not be negative.
	IdleTimeout time.Duration

	// DrainTimeout bounds the drain at stop: open connections get this long
	// to finish before they are cut. Keep it below the unit's TimeoutStopSec=
	// (STOP_TIMEOUT= in app.conf, 15 s by default), or systemd kills the
	// process mid-drain. Default DefaultDrainTimeout (10 s).
	DrainTimeout time.Duration

	// IdleGrace is how long, during a drain, a keep-alive connection may stay
	// idle before it is closed; a request sent within it is answered with
	// "Connection: close". Default activation.DefaultIdleGrace (1 s).
	IdleGrace time.Duration

	// MaxConns caps the connections open at once, over all listeners.
	// At the cap Serve stops accepting: a new connection waits in the
	// listening socket's accept queue in the kernel (its length is the
	// socket's backlog, systemd's Backlog=; once that is full too the kernel
	// drops new handshakes and clients retry) and is served as soon as an
	// open connection closes. The HTTP timeouts below bound how long an idle
	// or slow client holds its place (ReadHeaderTimeout before the first
	// request, KeepAliveTimeout between requests), so a flood of idle
	// connections or a slowloris stops costing anything seconds after it ends.
	// The health check waits in that queue like any client. A warning is
	// logged when the cap is reached, at most once a minute. Default
	// DefaultMaxConns (4096); negative means no cap.
	MaxConns int

	// HTTP, if set, is the template for the net/http server: its
	// ReadHeaderTimeout, ReadTimeout, WriteTimeout, IdleTimeout (the
	// keep-alive timeout), MaxHeaderBytes, ErrorLog and BaseContext are used;
	// its Handler and ConnState are not. A zero field takes the default
	// (DefaultReadHeaderTimeout 5 s, DefaultReadTimeout 30 s,
	// DefaultWriteTimeout 30 s, DefaultKeepAliveTimeout 60 s,
	// DefaultMaxHeaderBytes 16 KiB); a negative duration means no timeout, as
	// in net/http. A handler that streams for longer than WriteTimeout can
	// extend its own deadline with http.ResponseController.
	HTTP *http.Server

	// Logger receives the start line and activation's lifecycle events
	// (serving, draining, drained). Default: slog.Default().
	Logger *slog.Logger
}

// config is Options with every default applied and checked.
type config struct {
	Options
	http *http.Server
}

func resolve(o Options) (*config, error) {
	c := &config{Options: o}
	if c.Name == "" {
		c.Name = filepath.Base(os.Args[0])
	}
	if c.Version == "" || c.Commit == "" {
		v, commit := fromBuildInfo()
		if c.Version == "" {
			c.Version = v
		}
		if c.Commit == "" {
			c.Commit = commit
		}
	}
	if c.HealthPath == "" {
		if p := os.Getenv(HealthPathEnv); p != "" {
			if err := checkPath(p); err != nil {
				return nil, fmt.Errorf("bad %s=%q: %w", HealthPathEnv, p, err)
			}
			c.HealthPath = p
		} else {
			c.HealthPath = DefaultHealthPath
		}
	} else if err := checkPath(c.HealthPath); err != nil {
		return nil, fmt.Errorf("bad health path %q: %w", c.HealthPath, err)
	}
	if c.Port == "" {
		c.Port = os.Getenv(PortEnv)
	}
	switch {
	case c.IdleTimeout < 0:
		return nil, fmt.Errorf("bad idle timeout %s: must not be negative", c.IdleTimeout)
	case c.DrainTimeout < 0:
		return nil, fmt.Errorf("bad drain timeout %s: must not be negative", c.DrainTimeout)
	case c.IdleGrace < 0:
		return nil, fmt.Errorf("bad drain idle grace %s: must not be negative", c.IdleGrace)
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	if c.MaxConns == 0 {
		c.MaxConns = DefaultMaxConns
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	c.http = httpTemplate(o.HTTP)
	return c, nil
}

// checkPath accepts an absolute URL path without query or fragment.
func checkPath(p string) error {
	if !strings.HasPrefix(p, "/") {
		return errors.New("want an absolute path such as " + DefaultHealthPath)
	}
	if i := strings.IndexFunc(p, func(r rune) bool { return r <= ' ' || r == '?' || r == '#' || r == 0x7f }); i >= 0 {
		return fmt.Errorf("%q at offset %d: want a plain path without query, fragment, space or control characters", p[i], i)
	}
	return nil
}

func httpTemplate(t *http.Server) *http.Server {
	hs := &http.Server{}
	if t != nil {
		hs.ReadHeaderTimeout, hs.ReadTimeout, hs.WriteTimeout = t.ReadHeaderTimeout, t.ReadTimeout, t.WriteTimeout
		hs.IdleTimeout, hs.MaxHeaderBytes = t.IdleTimeout, t.MaxHeaderBytes
		hs.ErrorLog, hs.BaseContext = t.ErrorLog, t.BaseContext
	}
	orDefault := func(d *time.Duration, def time.Duration) {
		if *d == 0 {
			*d = def
		}
	}
	orDefault(&hs.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	orDefault(&hs.ReadTimeout, DefaultReadTimeout)
	orDefault(&hs.WriteTimeout, DefaultWriteTimeout)
	orDefault(&hs.IdleTimeout, DefaultKeepAliveTimeout)
	if hs.MaxHeaderBytes == 0 {
		hs.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	return hs
}

// fromBuildInfo is the main module's version and VCS revision as the go
// command recorded them.
func fromBuildInfo() (version, commit string) {
	version = "dev"
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return version, ""
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		version = v
	}
	dirty := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			commit = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if commit != "" && dirty {
		commit += "+dirty"
	}
	return version, commit
}
