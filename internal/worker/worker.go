// Package worker is `lodis serve`, the reference socket-activated worker: a
// small time service with health and info endpoints, built on package
// activation.
package worker

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/lodis/lodis/activation"
	"github.com/lodis/lodis/internal/buildinfo"
	"github.com/lodis/lodis/internal/cli"
	"github.com/lodis/lodis/internal/logging"
)

// Config is what `lodis serve` is told by its flags.
type Config struct {
	Listen           string        // address to bind when not socket-activated
	Port             string        // port reported on /__/health; default: from the socket
	SocketName       string        // FileDescriptorName= to serve; "" = every passed socket
	IdleTimeout      time.Duration // idle exit; 0 = never
	DrainTimeout     time.Duration // bound on the drain at stop
	IdleGrace        time.Duration // idle keep-alive connections closed after this during a drain
	KeepAliveTimeout time.Duration // idle keep-alive connections closed after this while serving
	LogLevel         string
	LogFormat        string
	ChaosAbortRate   float64 // probability per second of aborting; 0 = off
	TestHangHealth   bool    // test hook: /__/health never answers
}

// ParseFlags parses `lodis serve` arguments. Errors are one line, ready to print.
func ParseFlags(args []string, stderr io.Writer) (*Config, error) {
	c := &Config{}
	fs := flag.NewFlagSet("lodis serve", flag.ContinueOnError)
	fs.StringVar(&c.Listen, "listen", "", "address to bind when not socket-activated, e.g. 127.0.0.1:8080")
	fs.StringVar(&c.Port, "port", "", "port reported on /__/health (default: the socket's port)")
	fs.StringVar(&c.SocketName, "socket-name", "", "serve only passed sockets with this FileDescriptorName= (default: all)")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", 30*time.Second, "exit after this long with no open connection; 0 = never")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", activation.DefaultDrainTimeout, "on SIGTERM, wait this long for open connections (keep below TimeoutStopSec=)")
	fs.DurationVar(&c.IdleGrace, "drain-idle-grace", activation.DefaultIdleGrace, "during a drain, close keep-alive connections idle this long")
	fs.DurationVar(&c.KeepAliveTimeout, "keepalive-timeout", 60*time.Second, "close keep-alive connections idle this long")
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", "auto", "auto, text or json")
	fs.Float64Var(&c.ChaosAbortRate, "chaos-abort-rate", 0, "each second, abort with this probability (0..1); for chaos demos only")
	fs.BoolVar(&c.TestHangHealth, "test-hang-health", false, "testing only: /__/health never answers")
	if err := cli.Parse(fs, args, "lodis serve [flags]", stderr); err != nil {
		return nil, err
	}
	switch {
	case c.ChaosAbortRate < 0 || c.ChaosAbortRate > 1:
		return nil, fmt.Errorf("bad -chaos-abort-rate %v: want a probability from 0 to 1", c.ChaosAbortRate)
	case c.IdleTimeout < 0:
		return nil, fmt.Errorf("bad -idle-timeout %v: must not be negative", c.IdleTimeout)
	case c.DrainTimeout <= 0:
		return nil, fmt.Errorf("bad -drain-timeout %v: must be positive", c.DrainTimeout)
	}
	return c, nil
}

// Main runs `lodis serve` and returns the exit code.
func Main(args []string, stderr io.Writer) int {
	cfg, err := ParseFlags(args, stderr)
	if err != nil {
		return cli.Exit("lodis serve", err, stderr)
	}
	log, err := logging.New(stderr, cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		return cli.Exit("lodis serve", err, stderr)
	}
	_, activated := os.LookupEnv("LISTEN_FDS")
	ls, err := activation.Listeners(cfg.SocketName, cfg.Listen)
	if err != nil {
		fmt.Fprintf(stderr, "lodis serve: %v\n", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := Run(ctx, cfg, ls, activated, log); err != nil {
		log.WithError(err).Error("serve failed")
		return 1
	}
	return 0
}

// Run serves the worker's endpoints on ls until ctx is cancelled or idle exit.
func Run(ctx context.Context, cfg *Config, ls []net.Listener, activated bool, log *logrus.Logger) error {
	srv := &activation.Server{
		IdleTimeout:  cfg.IdleTimeout,
		DrainTimeout: cfg.DrainTimeout,
		IdleGrace:    cfg.IdleGrace,
		HTTP: &http.Server{
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       30 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       cfg.KeepAliveTimeout,
			MaxHeaderBytes:    16 << 10,
		},
	}
	h := &handlers{cfg: cfg, started: time.Now(), port: cfg.Port, activated: activated}
	for _, l := range ls {
		h.listeners = append(h.listeners, l.Addr().String())
	}
	if h.port == "" {
		h.port = os.Getenv("LODIS_INSTANCE")
	}
	if h.port == "" {
		if _, p, err := net.SplitHostPort(ls[0].Addr().String()); err == nil {
			h.port = p
		}
	}
	h.stats = func() (int64, uint64) { st := srv.Stats(); return st.OpenConns, st.Requests }
	h.hang.Store(cfg.TestHangHealth)
	srv.Handler = h.mux()
	// Hash the binary in the background: /__/health needs it, the first
	// response after activation must not wait for it.
	go buildinfo.SHA256()
	plog := log.WithField("port", h.port)
	srv.Log = plog
	plog.WithFields(logrus.Fields{"version": buildinfo.Version, "pid": os.Getpid(),
		"idle_timeout": cfg.IdleTimeout, "socket_activated": activated}).Info("lodis worker starting")
	if cfg.ChaosAbortRate > 0 {
		plog.WithField("rate", cfg.ChaosAbortRate).Warn("CHAOS MODE: this worker aborts at random each second (-chaos-abort-rate)")
		go chaos(ctx, cfg.ChaosAbortRate, plog)
	}
	err := srv.Serve(ctx, ls...)
	if err != nil && srv.Stats().Draining {
		// Connections cut at the drain deadline: logged by Serve, not a failure
		// of the service itself.
		return nil
	}
	return err
}

// chaos reproduces the lodis demo: every second, abort with probability p.
func chaos(ctx context.Context, p float64, log logrus.FieldLogger) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if rand.Float64() < p {
				log.Warn("chaos: aborting now")
				os.Exit(134)
			}
		}
	}
}
