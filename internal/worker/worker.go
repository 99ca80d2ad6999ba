// Package worker is `lodis serve`, the reference socket-activated worker: a
// small time service with health and info endpoints, built on package
// activation.
package worker

import (
	"context"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/lodis/lodis/activation"
	"github.com/lodis/lodis/internal/buildinfo"
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
	srv.Log = logging.Slog(plog)
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
