package release

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/lodis/lodis/units"
)

// Sandbox runs a candidate binary during validation.
type Sandbox interface {
	// Run runs binary with args, bounded by timeout, and returns what it
	// printed (stdout and stderr). The error says in a few words how the run
	// failed, to follow the command's name: "exited with status 3: …",
	// "timed out after 10s", "was killed by signal KILL".
	Run(ctx context.Context, binary string, args []string, timeout time.Duration) ([]byte, error)
}

// sandboxExtra is added to the worker's own confinement for a candidate: it
// reaches only loopback.
var sandboxExtra = []string{"IPAddressDeny=any", "IPAddressAllow=localhost"}

// WorkerSandbox is the worker's hardening (units/lodis@.service, [Service]
// section, read by package units) as systemd-run properties, plus
// IPAddressDeny=any with IPAddressAllow=localhost: a candidate runs as a
// throwaway dynamic user, sees the file system read-only, has no
// capabilities and reaches only loopback.
func WorkerSandbox() ([]string, error) {
	sb, err := units.WorkerSandbox()
	if err != nil {
		return nil, err
	}
	return append(sb, sandboxExtra...), nil
}

// SystemdRun runs candidates as transient services with `systemd-run --wait
// --pipe`, under WorkerSandbox and RuntimeMaxSec= set to the timeout, so the
// service manager kills a candidate that hangs even if lodis itself dies. It
// needs a running systemd (PID 1) and root; outside systemd use Direct.
type SystemdRun struct {
	// Properties replace WorkerSandbox() when not nil.
	Properties []string
	// Command is the systemd-run binary; default "systemd-run".
	Command string
}

// Run implements Sandbox.
func (s *SystemdRun) Run(ctx context.Context, binary string, args []string, timeout time.Duration) ([]byte, error) {
	props := s.Properties
	if props == nil {
		var err error
		if props, err = WorkerSandbox(); err != nil {
			return nil, fmt.Errorf("could not be run: %w", err)
		}
	}
	cmd := s.Command
	if cmd == "" {
		cmd = "systemd-run"
	}
	argv := []string{"--wait", "--pipe", "--collect", "--service-type=exec",
		"--description=lodis release validation: " + strings.Join(args, " "),
		"-p", fmt.Sprintf("RuntimeMaxSec=%dms", timeout.Milliseconds())}
	for _, p := range props {
		argv = append(argv, "-p", p)
	}
	argv = append(argv, "--", binary)
	argv = append(argv, args...)
	// systemd-run itself gets a little longer than the service's own limit.
	rctx, cancel := context.WithTimeout(ctx, timeout+5*time.Second)
	defer cancel()
	c := exec.CommandContext(rctx, cmd, argv...)
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	err := c.Run()
	out, result, status := splitSystemdRun(stdout.Bytes(), stderr.Bytes())
	if err == nil {
		return out, nil
	}
	if rctx.Err() != nil {
		return out, fmt.Errorf("timed out after %s (systemd-run did not return)", timeout)
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return out, fmt.Errorf("could not be run: %w", err)
	}
	switch {
	case result == "timeout":
		return out, fmt.Errorf("timed out after %s", timeout)
	case strings.HasPrefix(status, "code=killed/status="):
		return out, fmt.Errorf("was killed by signal %s%s", strings.TrimPrefix(status, "code=killed/status="), tail(out))
	case strings.HasPrefix(status, "code=dumped/status="):
		return out, fmt.Errorf("crashed (signal %s, core dumped)%s", strings.TrimPrefix(status, "code=dumped/status="), tail(out))
	case result == "" && status == "":
		// systemd-run failed before the service ran (e.g. exec failed).
		return out, fmt.Errorf("could not be run: %s", lastLine(out))
	}
	return out, errors.New(exitDetail(ee.ExitCode(), out))
}

// splitSystemdRun separates systemd-run's own lines ("Running as unit: …",
// "Finished with result: …", "Main processes terminated with: …", "Service
// runtime: …") from what the service printed.
func splitSystemdRun(stdout, stderr []byte) (out []byte, result, status string) {
	var b bytes.Buffer
	b.Write(stdout)
	sc := bufio.NewScanner(bytes.NewReader(stderr))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "Running as unit: "), strings.HasPrefix(line, "Service runtime: "),
			strings.HasPrefix(line, "CPU time consumed: "), strings.HasPrefix(line, "Memory peak: "):
		case strings.HasPrefix(line, "Finished with result: "):
			result = strings.TrimPrefix(line, "Finished with result: ")
		case strings.HasPrefix(line, "Main processes terminated with: "):
			status = strings.TrimPrefix(line, "Main processes terminated with: ")
		default:
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	return b.Bytes(), result, status
}

func tail(out []byte) string {
	if l := lastLine(out); l != "" {
		return ": " + l
	}
	return ""
}

// Direct runs candidates as plain child processes with an empty environment,
// killed at the timeout. It isolates nothing: it is for machines without
// systemd (development, unit tests), selected with `lodis upgrade -sandbox none`.
type Direct struct{}

// Run implements Sandbox.
func (Direct) Run(ctx context.Context, binary string, args []string, timeout time.Duration) ([]byte, error) {
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c := exec.CommandContext(rctx, binary, args...)
	c.Env = []string{}
	c.WaitDelay = time.Second
	out, err := c.CombinedOutput()
	if err == nil {
		return out, nil
	}
	if rctx.Err() == context.DeadlineExceeded {
		return out, fmt.Errorf("timed out after %s", timeout)
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return out, fmt.Errorf("could not be run: %w", err)
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return out, fmt.Errorf("was killed by signal %s%s", ws.Signal(), tail(out))
	}
	return out, errors.New(exitDetail(ee.ExitCode(), out))
}
