// Package serve is `lodis serve`, the reference worker (package worker)
// behind each lodis@PORT.service.
package serve

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/lodis/lodis/activation"
	"github.com/lodis/lodis/app"
	"github.com/lodis/lodis/internal/buildinfo"
	"github.com/lodis/lodis/internal/cli"
	"github.com/lodis/lodis/internal/logging"
	"github.com/lodis/lodis/internal/worker"
)

// ParseFlags parses `lodis serve` arguments. Errors are one line, ready to print.
func ParseFlags(args []string, stderr io.Writer) (*worker.Config, error) {
	c := &worker.Config{}
	fs := flag.NewFlagSet("lodis serve", flag.ContinueOnError)
	fs.StringVar(&c.Listen, "listen", "", "address to bind when not socket-activated, e.g. 127.0.0.1:8080")
	fs.StringVar(&c.Port, "port", "", "port reported on /__/health (default: the socket's port)")
	fs.StringVar(&c.SocketName, "socket-name", "", "serve only passed sockets with this FileDescriptorName= (default: all)")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", 30*time.Second, "exit after this long with no open connection; 0 = never")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", activation.DefaultDrainTimeout, "on SIGTERM, wait this long for open connections (keep below TimeoutStopSec=)")
	fs.DurationVar(&c.IdleGrace, "drain-idle-grace", activation.DefaultIdleGrace, "during a drain, close keep-alive connections idle this long")
	fs.DurationVar(&c.KeepAliveTimeout, "keepalive-timeout", 60*time.Second, "close keep-alive connections idle this long")
	fs.IntVar(&c.MaxConns, "max-conns", app.DefaultMaxConns, "serve at most this many connections at once; more wait in the kernel's accept queue")
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
	case c.MaxConns <= 0:
		return nil, fmt.Errorf("bad -max-conns %d: must be positive", c.MaxConns)
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
	if buildinfo.TestFault == buildinfo.FaultIgnoreSIGTERM {
		stop()
		signal.Ignore(syscall.SIGTERM) // test fault: a worker that never drains
		ctx = context.Background()
	}
	defer stop()
	if err := worker.Run(ctx, cfg, ls, activated, log); err != nil {
		log.WithError(err).Error("serve failed")
		return 1
	}
	return 0
}
