// Package supervise is `lodis supervise`, run by lodis-supervisor.service:
// it wires the supervisor's state machine (package supervisor) to its event
// stream and hook, its metrics, its status API with the status page, and the
// roll-out service, and runs them until SIGTERM.
package supervise

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/lodis/lodis/activation"
	"github.com/lodis/lodis/internal/buildinfo"
	"github.com/lodis/lodis/internal/cli"
	"github.com/lodis/lodis/internal/events"
	"github.com/lodis/lodis/internal/logging"
	"github.com/lodis/lodis/internal/metrics"
	"github.com/lodis/lodis/internal/release"
	"github.com/lodis/lodis/internal/rollout"
	"github.com/lodis/lodis/internal/statusapi"
	"github.com/lodis/lodis/internal/statuspage"
	"github.com/lodis/lodis/supervisor"
)

// Config is what `lodis supervise` is told by its flags.
type Config struct {
	supervisor.Options
	Socket      string // status API socket
	Group       string // group of the status socket
	Hook        string // --on-event script
	HookTimeout time.Duration
	RingSize    int
	LogLevel    string
	LogFormat   string
	Releases    string // release store the roll-outs move between
	AdminGroup  string // members may change state through the status API, as root may
}

// ParseFlags parses `lodis supervise` arguments. Errors are one line.
func ParseFlags(args []string, stderr io.Writer) (*Config, error) {
	c := &Config{}
	fs := flag.NewFlagSet("lodis supervise", flag.ContinueOnError)
	fs.StringVar(&c.Releases, "releases", release.DefaultRoot, "release store the supervisor rolls releases out from")
	fs.BoolVar(&c.Bus.User, "user", false, "watch the calling user's service manager instead of the system manager")
	fs.StringVar(&c.Bus.Address, "bus", "", "D-Bus address of systemd (default: /run/systemd/private as root, else the system bus; with --user the session bus)")
	fs.StringVar(&c.Socket, "status-socket", "", "status API unix socket (default "+statusapi.DefaultSocket+", with --user $XDG_RUNTIME_DIR/lodis/supervisor.sock)")
	fs.StringVar(&c.Group, "status-group", "lodis", "group given access (mode 0660) to the status socket, to read; \"\" to leave it as created")
	fs.StringVar(&c.AdminGroup, "admin-group", "", "group whose members may request roll-outs and holds through the status API, as root may; they reach the socket as members of --status-group too (default: root alone)")
	fs.DurationVar(&c.ProbeInterval, "probe-interval", supervisor.DefaultProbeInterval, "how often running workers are health-probed")
	fs.DurationVar(&c.ProbeTimeout, "probe-timeout", supervisor.DefaultProbeTimeout, "timeout of one health probe")
	fs.IntVar(&c.ProbeFailures, "probe-failures", supervisor.DefaultProbeFailures, "failed probes in a row before a running worker is restarted as hung")
	fs.DurationVar(&c.WakeProbeInterval, "wake-probe-interval", 0, "probe idle ports end to end this often, starting a worker; 0 = never")
	fs.DurationVar(&c.BackoffMax, "backoff-max", supervisor.DefaultBackoffMax, "longest delay between remedies of one kind on one instance")
	fs.StringVar(&c.Hook, "on-event", "", "script run once per event, with the event in LODIS_EVENT_* environment variables")
	fs.DurationVar(&c.HookTimeout, "on-event-timeout", events.DefaultHookTimeout, "kill the --on-event script after this long")
	fs.IntVar(&c.RingSize, "events", events.DefaultRingSize, "how many recent events to keep in memory")
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", "auto", "auto, text or json")
	if err := cli.Parse(fs, args, "lodis supervise [flags]", stderr); err != nil {
		return nil, err
	}
	switch {
	case c.Releases == "":
		return nil, errors.New("bad -releases: empty")
	case c.ProbeInterval <= 0:
		return nil, fmt.Errorf("bad -probe-interval %v: must be positive", c.ProbeInterval)
	case c.ProbeTimeout <= 0 || c.ProbeTimeout > c.ProbeInterval:
		return nil, fmt.Errorf("bad -probe-timeout %v: must be positive and at most -probe-interval (%v)", c.ProbeTimeout, c.ProbeInterval)
	case c.ProbeFailures < 1:
		return nil, fmt.Errorf("bad -probe-failures %d: must be at least 1", c.ProbeFailures)
	case c.WakeProbeInterval < 0:
		return nil, fmt.Errorf("bad -wake-probe-interval %v: must not be negative", c.WakeProbeInterval)
	case c.WakeProbeInterval > 0 && c.WakeProbeInterval < time.Minute:
		return nil, fmt.Errorf("bad -wake-probe-interval %v: a wake probe starts a worker; use a minute or more", c.WakeProbeInterval)
	case c.BackoffMax < time.Second:
		return nil, fmt.Errorf("bad -backoff-max %v: must be at least 1s", c.BackoffMax)
	case c.HookTimeout <= 0:
		return nil, fmt.Errorf("bad -on-event-timeout %v: must be positive", c.HookTimeout)
	case c.RingSize < 1 || c.RingSize > 1_000_000:
		return nil, fmt.Errorf("bad -events %d: want 1 to 1000000", c.RingSize)
	}
	if c.Hook != "" {
		if err := events.CheckHook(c.Hook); err != nil {
			return nil, fmt.Errorf("bad -on-event: %w", err)
		}
	}
	if c.Socket == "" {
		c.Socket = statusapi.DefaultSocket
		if c.Bus.User {
			if os.Getenv("XDG_RUNTIME_DIR") == "" {
				return nil, errors.New("--user needs XDG_RUNTIME_DIR (or pass --status-socket)")
			}
			c.Socket = statusapi.UserSocket()
		}
	}
	return c, nil
}

// Main runs `lodis supervise` and returns the exit code: 0 after SIGTERM, 2
// for bad flags, 1 when the status socket cannot be opened or the status API
// fails.
func Main(args []string, stderr io.Writer) int {
	cfg, err := ParseFlags(args, stderr)
	if err != nil {
		return cli.Exit("lodis supervise", err, stderr)
	}
	log, err := logging.New(stderr, cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		fmt.Fprintf(stderr, "lodis supervise: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	m := metrics.New()
	ev := events.New(cfg.RingSize, log)
	ev.Subscribe(m.CountEvent)
	if cfg.Hook != "" {
		h := &events.Hook{Path: cfg.Hook, Timeout: cfg.HookTimeout, Log: log,
			Done: func(_ events.Event, outcome string, _ error) { m.CountHook(outcome) }}
		h.Start(ctx)
		defer h.Wait()
		ev.Subscribe(func(e events.Event) { h.Offer(e) })
	}
	o := cfg.Options
	o.Events, o.Metrics, o.Log = ev, m, log
	o.Notifier = &activation.SystemdNotifier{Log: logging.Slog(log)}
	o.Releases = release.NewStore(cfg.Releases)
	sup, err := supervisor.New(o)
	if err != nil {
		fmt.Fprintf(stderr, "lodis supervise: %v\n", err)
		return 2
	}
	// The supervisor runs the installed lodis, never a release.
	self, err := buildinfo.SHA256()
	if err != nil {
		log.WithError(err).Warn("cannot hash the supervisor's own binary")
	}
	api := &statusapi.Server{Sup: sup, Events: ev, Metrics: m, Log: log, Version: buildinfo.Version, SHA256: self,
		Holder: sup, ReadGroup: cfg.Group, AdminGroup: cfg.AdminGroup}
	ro := &rollout.Service{Host: sup, Events: ev, Metrics: m, Log: log, Root: cfg.Releases}
	if err := ro.Register(api); err != nil {
		fmt.Fprintf(stderr, "lodis supervise: %v\n", err)
		return 2
	}
	// The status page: GET / (read-only; over TCP through lodis-metrics.socket).
	api.Handle("GET /{$}", &statuspage.Page{Status: api.Status, Events: ev, Rollout: ro.State})
	l, err := statusapi.ListenUnix(cfg.Socket, cfg.Group)
	if err != nil {
		fmt.Fprintf(stderr, "lodis supervise: %v\n", err)
		return 1
	}
	defer os.Remove(cfg.Socket)
	// The status API failing ends the supervisor too (exit 1: systemd
	// restarts it), rather than leaving it mute.
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	apiErr := make(chan error, 1)
	go func() { apiErr <- api.Serve(runCtx, l); stopRun() }()
	log.WithField("status_socket", cfg.Socket).WithField("version", buildinfo.Version).Info("lodis supervisor starting")
	roDone := make(chan struct{})
	go func() { defer close(roDone); ro.Run(runCtx) }()
	// The state machine and its D-Bus connection outlive the roll-out
	// service: a rollback under way when SIGTERM comes still has systemd to
	// talk to.
	supCtx, stopSup := context.WithCancel(context.WithoutCancel(runCtx))
	go func() { <-runCtx.Done(); <-roDone; stopSup() }()
	sup.Run(supCtx)
	stopRun()
	<-roDone
	if err := <-apiErr; err != nil {
		log.WithError(err).Error("status API failed")
		return 1
	}
	return 0
}
