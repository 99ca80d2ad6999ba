// Package metricsproxy is `lodis metrics-proxy`, run by lodis-metrics.service
// on the TCP socket lodis-metrics.socket passes it: the supervisor's
// /metrics and status page over TCP, read-only (package statushttp).
package metricsproxy

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os/signal"
	"syscall"
	"time"

	"github.com/lodis/lodis/activation"
	"github.com/lodis/lodis/internal/cli"
	"github.com/lodis/lodis/internal/logging"
	"github.com/lodis/lodis/internal/statusapi"
	"github.com/lodis/lodis/internal/statushttp"
)

// SocketName is the FileDescriptorName= of lodis-metrics.socket.
const SocketName = "metrics"

// Config is what `lodis metrics-proxy` is told by its flags.
type Config struct {
	Socket      string // the status API's unix socket
	Listen      string // address to bind when not socket-activated
	IdleTimeout time.Duration
	LogLevel    string
	LogFormat   string
}

// ParseFlags parses `lodis metrics-proxy` arguments. Errors are one line.
func ParseFlags(args []string, stderr io.Writer) (*Config, error) {
	c := &Config{}
	fs := flag.NewFlagSet("lodis metrics-proxy", flag.ContinueOnError)
	fs.StringVar(&c.Socket, "status-socket", statusapi.DefaultSocket, "the supervisor's status API socket")
	fs.StringVar(&c.Listen, "listen", "", "address to bind when not socket-activated, e.g. 127.0.0.1:9187 (default: the socket systemd passes, named "+SocketName+")")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", 10*time.Minute, "exit after this long with no open connection (systemd starts it again on the next); 0 = never")
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", "auto", "auto, text or json")
	if err := cli.Parse(fs, args, "lodis metrics-proxy [flags]", stderr); err != nil {
		return nil, err
	}
	switch {
	case c.Socket == "":
		return nil, fmt.Errorf("bad -status-socket: empty")
	case c.IdleTimeout < 0:
		return nil, fmt.Errorf("bad -idle-timeout %v: must not be negative", c.IdleTimeout)
	}
	return c, nil
}

// Main runs `lodis metrics-proxy` and returns the exit code: 0 after SIGTERM
// or an idle exit, 2 for bad flags, 1 when there is no socket to serve.
func Main(args []string, stderr io.Writer) int {
	cfg, err := ParseFlags(args, stderr)
	if err != nil {
		return cli.Exit("lodis metrics-proxy", err, stderr)
	}
	log, err := logging.New(stderr, cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		fmt.Fprintf(stderr, "lodis metrics-proxy: %v\n", err)
		return 2
	}
	name := SocketName
	if cfg.Listen != "" {
		name = ""
	}
	ls, err := activation.Listeners(name, cfg.Listen)
	if err != nil {
		fmt.Fprintf(stderr, "lodis metrics-proxy: %v\n", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	front := &statushttp.Front{Socket: cfg.Socket, Log: log}
	srv := &activation.Server{Handler: front.Handler(), IdleTimeout: cfg.IdleTimeout, DrainTimeout: 5 * time.Second,
		Log: logging.Slog(log), Notifier: &activation.SystemdNotifier{Log: logging.Slog(log)},
		HTTP: &http.Server{ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second,
			IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 16 << 10}}
	for _, l := range ls {
		log.WithField("listen", l.Addr().String()).WithField("status_socket", cfg.Socket).Info("serving /metrics and the status page, read-only")
	}
	if err := srv.Serve(ctx, ls...); err != nil {
		fmt.Fprintf(stderr, "lodis metrics-proxy: %v\n", err)
		return 1
	}
	return 0
}
