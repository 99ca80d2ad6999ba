package release

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/lodis/lodis/internal/appconf"
	"github.com/lodis/lodis/internal/health"
	"github.com/lodis/lodis/internal/systemd"
	"github.com/lodis/lodis/units"
)

// Trial runs a candidate as a worker would, for validation: on a listening
// socket passed the way systemd passes it (LISTEN_FDS, fd 3, named http),
// with the app's arguments and environment. It must answer app.HealthPath
// with 2xx within timeout, then exit within app.StopTimeout of SIGTERM. An
// app that fails is an *Invalid error saying how; anything else is a
// failure of the trial itself.
type Trial interface {
	Run(ctx context.Context, binary string, app appconf.Config, timeout time.Duration) (TrialResult, error)
}

// TrialResult is what a trial run learnt.
type TrialResult struct {
	Version string // the health answer's "version", when it has one
	Summary string // one line: what answered and how fast it stopped
}

// SystemdTrial runs the candidate as a transient, socket-activated service
// (systemd-run --socket-property): the worker's own sandbox (package units,
// from units/lodis-worker.conf), reaching loopback only, on a free loopback
// port; the first health check activates it. It needs a running systemd
// (PID 1) and root; outside systemd use DirectTrial.
type SystemdTrial struct {
	// Units is the connection the trial watches and stops its units
	// through. Required.
	Units systemd.Units
	// Properties replace WorkerSandbox() when not nil.
	Properties []string
	// Command is the systemd-run binary; default "systemd-run".
	Command string
}

// sandboxExtra is added to the worker's own confinement for a candidate: it
// reaches only loopback.
var sandboxExtra = []string{"IPAddressDeny=any", "IPAddressAllow=localhost"}

// WorkerSandbox is the worker's confinement (the [Service] hardening of
// units/lodis-worker.conf, read by package units) as systemd-run properties,
// plus IPAddressDeny=any with IPAddressAllow=localhost: a candidate runs as
// a throwaway dynamic user, sees the file system read-only, has no
// capabilities and reaches only loopback.
func WorkerSandbox() ([]string, error) {
	sb, err := units.WorkerSandbox()
	if err != nil {
		return nil, err
	}
	return append(sb, sandboxExtra...), nil
}

// Run implements Trial.
func (s *SystemdTrial) Run(ctx context.Context, binary string, app appconf.Config, timeout time.Duration) (TrialResult, error) {
	props := s.Properties
	if props == nil {
		var err error
		if props, err = WorkerSandbox(); err != nil {
			return TrialResult{}, err
		}
	}
	port, err := freePort()
	if err != nil {
		return TrialResult{}, err
	}
	name := "lodis-trial-" + randomHex(6)
	svc, sock := name+".service", name+".socket"
	typ := "notify"
	if app.Ready == appconf.ReadyHealth {
		typ = "exec"
	}
	// No --collect: a service that failed must stay loaded long enough to
	// say how; the deferred clean-up resets both units.
	argv := []string{"--unit=" + name, "--quiet",
		"--description=lodis release validation: trial run",
		"--socket-property=ListenStream=127.0.0.1:" + port, "--socket-property=FileDescriptorName=http",
		"-p", "Type=" + typ, "-p", "NotifyAccess=main",
		"-p", fmt.Sprintf("TimeoutStartSec=%dms", timeout.Milliseconds()),
		"-p", fmt.Sprintf("TimeoutStopSec=%dms", app.StopTimeout.Milliseconds()),
		// Killed by the service manager even if lodis dies meanwhile.
		"-p", fmt.Sprintf("RuntimeMaxSec=%dms", (timeout + app.StopTimeout + 30*time.Second).Milliseconds()),
		"-E", "LODIS_PORT=" + port, "-E", "LODIS_INSTANCE=" + port}
	for _, e := range app.Environment() {
		argv = append(argv, "-E", e)
	}
	if app.EnvFile != "" {
		argv = append(argv, "-p", "EnvironmentFile="+app.EnvFile)
	}
	if app.StateDir {
		argv = append(argv, "-p", "StateDirectory=lodis-trial")
	}
	for _, p := range props {
		argv = append(argv, "-p", p)
	}
	if app.Network == appconf.NetworkHost {
		// As its unit runs it; IPAddressDeny= still keeps the trial on
		// loopback.
		argv = append(argv, "-p", "PrivateNetwork=no")
	}
	argv = append(argv, "--", binary)
	argv = append(argv, substitutePort(app.Args, port)...)
	cmd := s.Command
	if cmd == "" {
		cmd = "systemd-run"
	}
	if out, err := exec.CommandContext(ctx, cmd, argv...).CombinedOutput(); err != nil {
		return TrialResult{}, fmt.Errorf("trial: systemd-run: %w: %s", err, strings.TrimSpace(string(out)))
	}
	// Whatever happens, the trial's units go.
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), app.StopTimeout+10*time.Second)
		defer cancel()
		s.Units.StopUnit(cctx, sock)
		s.Units.StopUnit(cctx, svc)
		s.Units.ResetFailedUnit(cctx, svc)
		s.Units.ResetFailedUnit(cctx, sock)
		if app.StateDir {
			os.RemoveAll("/var/lib/private/lodis-trial")
			os.Remove("/var/lib/lodis-trial")
		}
	}()
	exited := func() error {
		u, err := s.Units.UnitState(ctx, svc)
		if err == nil && (u.ActiveState == "failed" || u.ActiveState == "inactive" && u.Result != "" && u.Result != "success") {
			return fmt.Errorf("exited before it answered (%s, result %s)%s", u.State(), u.Result, journalTail(svc))
		}
		// Failed so often that its socket gave up (start limit).
		if k, err := s.Units.UnitState(ctx, sock); err == nil && k.ActiveState == "failed" {
			return fmt.Errorf("exited before it answered, again and again (its socket failed: %s)%s", k.Result, journalTail(svc))
		}
		return nil
	}
	h, took, err := waitHealthy(ctx, "127.0.0.1:"+port, app, timeout, exited)
	if err != nil {
		return TrialResult{}, &Invalid{Check: "trial", Err: err}
	}
	start := time.Now()
	if err := s.Units.StopUnit(ctx, svc); err != nil {
		return TrialResult{}, fmt.Errorf("trial: stop the candidate: %w", err)
	}
	stopped := time.Since(start)
	u, err := s.Units.UnitState(ctx, svc)
	if err != nil {
		return TrialResult{}, fmt.Errorf("trial: %w", err)
	}
	if u.Result == "timeout" {
		return TrialResult{}, &Invalid{Check: "trial", Err: fmt.Errorf("ignored SIGTERM: still running %s later (STOP_TIMEOUT), killed", app.StopTimeout)}
	}
	return TrialResult{Version: h.Version, Summary: fmt.Sprintf("answered %s in %s (cold start included), stopped %s after SIGTERM",
		app.HealthPath, took.Round(time.Millisecond), stopped.Round(time.Millisecond))}, nil
}

// DirectTrial runs the candidate as a child process, with a listening socket
// on a free loopback port as its fd 3 and LISTEN_FDS=1, LISTEN_FDNAMES=http,
// LISTEN_PID its own.
// It isolates nothing: it is for machines without systemd (development,
// unit tests), selected with `lodis upgrade -sandbox none`.
type DirectTrial struct{}

// Run implements Trial.
func (DirectTrial) Run(ctx context.Context, binary string, app appconf.Config, timeout time.Duration) (TrialResult, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return TrialResult{}, fmt.Errorf("trial: %w", err)
	}
	_, port, _ := net.SplitHostPort(l.Addr().String())
	lf, err := l.(*net.TCPListener).File()
	l.Close()
	if err != nil {
		return TrialResult{}, fmt.Errorf("trial: %w", err)
	}
	defer lf.Close()
	// LISTEN_PID must name the app's own process, known only once it runs:
	// a shell sets it and execs the app, which keeps the shell's PID.
	c := exec.Command("/bin/sh", append([]string{"-c", `LISTEN_PID=$$ exec "$0" "$@"`, binary}, substitutePort(app.Args, port)...)...)
	c.ExtraFiles = []*os.File{lf}
	c.Env = append([]string{"LISTEN_FDS=1", "LISTEN_FDNAMES=http", "LODIS_PORT=" + port, "LODIS_INSTANCE=" + port,
		"PATH=/usr/local/bin:/usr/bin:/bin"}, app.Environment()...)
	var out tail
	c.Stdout, c.Stderr = &out, &out
	if err := c.Start(); err != nil {
		return TrialResult{}, &Invalid{Check: "trial", Err: fmt.Errorf("could not be started: %w", err)}
	}
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	var waitErr error
	waited := false
	exited := func() error {
		select {
		case waitErr = <-done:
			waited = true
			return fmt.Errorf("exited before it answered (%v)%s", waitErr, out.line())
		default:
			return nil
		}
	}
	h, took, err := waitHealthy(ctx, "127.0.0.1:"+port, app, timeout, exited)
	if err != nil {
		if !waited {
			c.Process.Kill()
			<-done
		}
		return TrialResult{}, &Invalid{Check: "trial", Err: err}
	}
	start := time.Now()
	c.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(app.StopTimeout):
		c.Process.Kill()
		<-done
		return TrialResult{}, &Invalid{Check: "trial", Err: fmt.Errorf("ignored SIGTERM: still running %s later (STOP_TIMEOUT), killed", app.StopTimeout)}
	}
	return TrialResult{Version: h.Version, Summary: fmt.Sprintf("answered %s in %s, stopped %s after SIGTERM",
		app.HealthPath, took.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))}, nil
}

// waitHealthy checks addr's health path until it answers 2xx, for at most
// timeout. Three definite wrong answers in a row (an HTTP status other than
// 2xx) fail at once; exited reports an app that is gone.
func waitHealthy(ctx context.Context, addr string, app appconf.Config, timeout time.Duration, exited func() error) (health.Report, time.Duration, error) {
	c := &health.Client{Timeout: app.HealthTimeout, UserAgent: "lodis-validation"}
	start := time.Now()
	deadline := start.Add(timeout)
	wrong := 0
	var last error
	for {
		h, _, err := c.GetURL(ctx, "http://"+addr+app.HealthPath)
		if err == nil {
			return h, time.Since(start), nil
		}
		var se *health.StatusError
		var syn *health.SyntaxError
		switch {
		case errors.As(err, &syn):
			// 2xx with a body that is not health JSON: the contract only
			// asks for 2xx.
			return health.Report{}, time.Since(start), nil
		case errors.As(err, &se):
			wrong++
		default:
			wrong = 0
		}
		last = err
		if wrong >= 3 {
			return health.Report{}, 0, fmt.Errorf("%s answered %s three times in a row", app.HealthPath, se.Status)
		}
		if err := exited(); err != nil {
			return health.Report{}, 0, err
		}
		if time.Now().After(deadline) {
			return health.Report{}, 0, fmt.Errorf("no healthy answer on %s within %s: %v", app.HealthPath, timeout, last)
		}
		select {
		case <-ctx.Done():
			return health.Report{}, 0, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// substitutePort replaces %i, the systemd specifier of the port, in args.
func substitutePort(args []string, port string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = strings.ReplaceAll(a, "%i", port)
	}
	return out
}

// freePort is a loopback port nothing listens on now.
func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("trial: find a free port: %w", err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port), nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// journalTail is ": " and the last lines the unit logged, or "".
func journalTail(unit string) string {
	out, err := exec.Command("journalctl", "-u", unit, "-o", "cat", "-n", "3", "--no-pager").Output()
	if s := strings.TrimSpace(string(out)); err == nil && s != "" {
		return ": " + strings.ReplaceAll(truncate(s, 300), "\n", " | ")
	}
	return ""
}

// tail keeps the last bytes a child wrote.
type tail struct{ b []byte }

func (t *tail) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > 4096 {
		t.b = t.b[len(t.b)-4096:]
	}
	return len(p), nil
}

func (t *tail) line() string {
	if l := lastLine(t.b); l != "" {
		return ": " + l
	}
	return ""
}
