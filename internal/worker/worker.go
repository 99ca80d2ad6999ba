// Package worker is `lodis serve`, the reference socket-activated worker: a
// small time service with info endpoints, built on package app, which gives
// it the health report, the connection cap, idle exit, drain and sd_notify.
package worker

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/lodis/lodis/app"
	"github.com/lodis/lodis/internal/buildinfo"
	"github.com/lodis/lodis/internal/logging"
)

// Config is what `lodis serve` is told by its flags.
type Config struct {
	Listen           string        // address to bind when not socket-activated
	Port             string        // port reported on /__/health; default: from the socket
	HealthPath       string        // where the health report is served; "" = $LODIS_HEALTH_PATH or /__/health
	SocketName       string        // FileDescriptorName= to serve; "" = every passed socket
	IdleTimeout      time.Duration // idle exit; 0 = never
	DrainTimeout     time.Duration // bound on the drain at stop
	IdleGrace        time.Duration // idle keep-alive connections closed after this during a drain
	KeepAliveTimeout time.Duration // idle keep-alive connections closed after this while serving
	MaxConns         int           // connections open at once; beyond it they wait in the accept queue
	LogLevel         string
	LogFormat        string
	ChaosAbortRate   float64 // probability per second of aborting; 0 = off
	TestHangHealth   bool    // test hook: /__/health never answers
}

// readTimeout bounds reading one request, and is the keep-alive timeout
// when Config.KeepAliveTimeout is zero (net/http's own rule).
const readTimeout = 30 * time.Second

// Run serves the worker's endpoints on ls until ctx is cancelled or idle exit.
func Run(ctx context.Context, cfg *Config, ls []net.Listener, activated bool, log *logrus.Logger) error {
	h := &handlers{cfg: cfg, activated: activated, started: time.Now()}
	for _, l := range ls {
		h.listeners = append(h.listeners, l.Addr().String())
	}
	port := cfg.Port
	if port == "" {
		port = os.Getenv("LODIS_INSTANCE")
	}
	if port == "" {
		if _, p, err := net.SplitHostPort(ls[0].Addr().String()); err == nil {
			port = p
		}
	}
	h.port = port
	h.hang.Store(cfg.TestHangHealth || activated && buildinfo.TestFault == buildinfo.FaultHangHealth)
	keepAlive := cfg.KeepAliveTimeout
	if keepAlive == 0 {
		keepAlive = readTimeout
	}
	plog := log.WithField("port", port)
	a, err := app.New(app.Options{
		Name: "lodis", Version: buildinfo.Version, Commit: buildinfo.Commit, Port: port,
		HealthPath: cfg.HealthPath, Health: h.check, Listeners: ls,
		IdleTimeout: cfg.IdleTimeout, DrainTimeout: cfg.DrainTimeout, IdleGrace: cfg.IdleGrace,
		MaxConns: cfg.MaxConns,
		HTTP: &http.Server{
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       readTimeout,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       keepAlive,
			MaxHeaderBytes:    16 << 10,
		},
		Logger: logging.Slog(plog),
	})
	if err != nil {
		return err
	}
	h.app = a
	if cfg.ChaosAbortRate > 0 {
		plog.WithField("rate", cfg.ChaosAbortRate).Warn("CHAOS MODE: this worker aborts at random each second (-chaos-abort-rate)")
		go chaos(ctx, cfg.ChaosAbortRate, plog)
	}
	return a.Serve(ctx, h.mux())
}

// check is the worker's own health check: the test fault and the hang hook.
func (h *handlers) check(ctx context.Context) error {
	if h.hang.Load() {
		<-ctx.Done() // test hook: behave like a hung worker
		return ctx.Err()
	}
	if h.activated && buildinfo.TestFault == buildinfo.FaultServeUnhealthy {
		return errors.New("test fault serve-unhealthy")
	}
	if h.activated && buildinfo.TestFault == buildinfo.FaultUnhealthyAfter1s && time.Since(h.started) > time.Second {
		return errors.New("test fault unhealthy-after-1s")
	}
	return nil
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
