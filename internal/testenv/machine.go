// Package testenv is the real-systemd harness of the tests, the benchmark
// and the demo. Boot starts a throwaway, real systemd: this machine's own
// root seen through a copy-on-write overlay on a tmpfs, booted with
// systemd-nspawn. Everything written inside is gone when the Machine is
// closed; the host is never touched. The container shares the host's
// network, so ports opened inside answer on the host's loopback, unless it
// is given a network namespace of its own (Options.NetworkNamespace).
//
// Around it: InstallLodis installs lodis as an operator would, Build builds
// lodis binaries stamped with a version or a test fault, Main is a test
// package's TestMain, and WaitFor, Poll, Health and Client are the polling
// and HTTP helpers the tests share.
//
// Booting needs root, systemd-nspawn (Debian: systemd-container), nsenter
// and overlayfs; Check says which is missing.
package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Options configure Boot. The zero value is usable.
type Options struct {
	// Name is the machine name (hostname inside). Default DefaultName.
	Name string
	// Mask lists units masked for this boot (kernel command line
	// systemd.mask=), to keep host services such as nginx out of the way.
	// Default: DefaultMask.
	Mask []string
	// Log receives the container's console. Default: a file in the state dir.
	Log io.Writer
	// BootTimeout bounds the wait for the system to be up. Default 90 s.
	BootTimeout time.Duration
	// NetworkNamespace, when set, is the path of a network namespace the
	// container joins (systemd-nspawn --network-namespace-path=), e.g.
	// /run/netns/NAME made by `ip netns add`: the container then has that
	// namespace's interfaces and addresses instead of the host's network.
	// Default "": the host's network.
	NetworkNamespace string
	// SystemCallFilter lists system calls to allow beyond nspawn's own
	// filter (systemd-nspawn --system-call-filter=). nspawn refuses bpf(2),
	// so that systemd inside enforces no IPAddressAllow=/IPAddressDeny=
	// (BPF firewalling) unless "bpf" is listed.
	SystemCallFilter []string
}

// DefaultName is the machine name when Options.Name is empty.
const DefaultName = "lodis-test"

// DefaultMask are host services that have no business in a lodis test machine.
var DefaultMask = []string{"nginx.service", "postgresql.service", "postgresql@15-main.service",
	"nix-daemon.service", "nix-daemon.socket", "docker.service", "docker.socket", "containerd.service",
	"ssh.service", "cron.service", "apt-daily.timer", "apt-daily-upgrade.timer", "man-db.timer",
	"e2scrub_all.timer", "fstrim.timer", "logrotate.timer", "redis-server.service", "memcached.service"}

// Machine is a booted container. Close it on every exit path.
type Machine struct {
	Name   string
	Root   string // the container's root, seen from the host: write files here to put them inside
	Leader int    // PID of the container's PID 1 (systemd), for nsenter

	dir     string
	cmd     *exec.Cmd
	done    chan error
	logf    *os.File
	cgroups cgroups
	closed  bool
}

// Check reports, as one clear error, what is missing to boot a machine here.
func Check() error {
	if os.Geteuid() != 0 {
		return errors.New("booting a test systemd needs root (systemd-nspawn and overlay mounts)")
	}
	if _, err := exec.LookPath("systemd-nspawn"); err != nil {
		return errors.New("systemd-nspawn not found: install it with 'apt-get install -y systemd-container'")
	}
	if _, err := exec.LookPath("nsenter"); err != nil {
		return errors.New("nsenter not found: install it with 'apt-get install -y util-linux'")
	}
	return nil
}

// Boot starts a machine and waits until its system manager is up (running or
// degraded) and its D-Bus answers.
func Boot(ctx context.Context, o Options) (m *Machine, err error) {
	if err := Check(); err != nil {
		return nil, err
	}
	if o.Name == "" {
		o.Name = DefaultName
	}
	if o.Mask == nil {
		o.Mask = DefaultMask
	}
	if o.BootTimeout == 0 {
		o.BootTimeout = 90 * time.Second
	}
	dir, err := os.MkdirTemp("", "lodis-machine-")
	if err != nil {
		return nil, fmt.Errorf("machine state dir: %w", err)
	}
	m = &Machine{Name: o.Name, dir: dir, Root: filepath.Join(dir, "root"), done: make(chan error, 1)}
	defer func() {
		if err != nil {
			m.Close()
		}
	}()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "mode=0700"); err != nil {
		return m, fmt.Errorf("mount tmpfs on %s: %w", dir, err)
	}
	for _, d := range []string{"upper", "work", "root"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			return m, fmt.Errorf("machine state dir: %w", err)
		}
	}
	opts := fmt.Sprintf("lowerdir=/,upperdir=%s/upper,workdir=%s/work", dir, dir)
	if err := syscall.Mount("overlay", m.Root, "overlay", 0, opts); err != nil {
		return m, fmt.Errorf("mount overlay of / on %s: %w", m.Root, err)
	}
	// A stale machine-id or hostname from the host is fine; leftovers of a
	// demo in the host's /run are not visible (the overlay only covers /).
	args := []string{"-D", m.Root, "-b", "--register=no", "--keep-unit", "--machine=" + o.Name,
		"--console=pipe"}
	if o.NetworkNamespace != "" {
		args = append(args, "--network-namespace-path="+o.NetworkNamespace)
	}
	if len(o.SystemCallFilter) > 0 {
		args = append(args, "--system-call-filter="+strings.Join(o.SystemCallFilter, " "))
	}
	args = append(args, "--")
	for _, u := range o.Mask {
		args = append(args, "systemd.mask="+u)
	}
	if m.cgroups, err = newCgroups(filepath.Base(dir)); err != nil {
		return m, err
	}
	// The shell joins the machine's groups, then execs nspawn (same PID).
	m.cmd = exec.Command("sh", append([]string{"-c", m.cgroups.joinScript(), "sh", "systemd-nspawn"}, args...)...)
	if o.Log == nil {
		// The console log lives beside the tmpfs, so it survives Close for a
		// post-mortem; the dir itself is removed when empty.
		f, err := os.CreateTemp("", "lodis-machine-"+o.Name+"-*.log")
		if err != nil {
			return m, fmt.Errorf("console log: %w", err)
		}
		m.logf = f
		o.Log = f
	}
	m.cmd.Stdout, m.cmd.Stderr = o.Log, o.Log
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM, Setpgid: true}
	if err := m.cmd.Start(); err != nil {
		return m, fmt.Errorf("start systemd-nspawn: %w", err)
	}
	go func() { m.done <- m.cmd.Wait() }()

	bctx, cancel := context.WithTimeout(ctx, o.BootTimeout)
	defer cancel()
	if err := m.waitLeader(bctx); err != nil {
		return m, err
	}
	if err := m.waitRunning(bctx); err != nil {
		return m, err
	}
	return m, nil
}

func (m *Machine) waitLeader(ctx context.Context) error {
	for {
		out, _ := exec.Command("pgrep", "-P", strconv.Itoa(m.cmd.Process.Pid), "-x", "systemd").Output()
		if f := strings.Fields(string(out)); len(f) > 0 {
			m.Leader, _ = strconv.Atoi(f[0])
			return nil
		}
		select {
		case err := <-m.done:
			m.done <- err
			return fmt.Errorf("systemd-nspawn exited before booting: %v (console: %s)", err, m.LogPath())
		case <-ctx.Done():
			return fmt.Errorf("container PID 1 did not appear: %w (console: %s)", ctx.Err(), m.LogPath())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (m *Machine) waitRunning(ctx context.Context) error {
	var last string
	for {
		out, _ := m.Output(ctx, "systemctl", "is-system-running", "--wait")
		last = strings.TrimSpace(out)
		if last == "running" || last == "degraded" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("container systemd not up (last state %q): %w (console: %s)", last, ctx.Err(), m.LogPath())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// LogPath is the file holding the container's console, or "" when Options.Log was given.
func (m *Machine) LogPath() string {
	if m.logf == nil {
		return ""
	}
	return m.logf.Name()
}

// Command returns a command that runs argv inside the container (all of its
// namespaces) with a clean environment.
func (m *Machine) Command(ctx context.Context, argv ...string) *exec.Cmd {
	args := append([]string{"-t", strconv.Itoa(m.Leader), "-a", "--",
		"/usr/bin/env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"LANG=C.UTF-8", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0", "HOME=/root"}, argv...)
	return exec.CommandContext(ctx, "nsenter", args...)
}

// Output runs argv inside the container and returns its combined output. The
// error, if any, includes that output.
func (m *Machine) Output(ctx context.Context, argv ...string) (string, error) {
	var b bytes.Buffer
	c := m.Command(ctx, argv...)
	c.Stdout, c.Stderr = &b, &b
	if err := c.Run(); err != nil {
		return b.String(), fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(b.String()))
	}
	return b.String(), nil
}

// Sh runs a shell script inside the container; see Output.
func (m *Machine) Sh(ctx context.Context, script string) (string, error) {
	return m.Output(ctx, "/bin/sh", "-ec", script)
}

// WriteFile writes a file inside the container, creating parent directories.
func (m *Machine) WriteFile(path string, data []byte, perm os.FileMode) error {
	p := filepath.Join(m.Root, path)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("write %s in machine: %w", path, err)
	}
	if err := os.WriteFile(p, data, perm); err != nil {
		return fmt.Errorf("write %s in machine: %w", path, err)
	}
	return nil
}

// Close halts the container (SIGTERM to systemd-nspawn: a clean shutdown;
// after 20 s, SIGKILL to the container's PID 1 and to systemd-nspawn),
// unmounts the overlay and tmpfs, and removes the state dir. It is safe to
// call more than once.
func (m *Machine) Close() error {
	if m == nil || m.closed {
		return nil
	}
	m.closed = true
	var errs []error
	if m.cmd != nil && m.cmd.Process != nil {
		m.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-m.done:
		case <-time.After(20 * time.Second):
			// The container's processes are not in nspawn's process group:
			// killing its PID 1 ends every one of them, which frees the
			// overlay for the unmount below.
			if m.Leader > 0 {
				syscall.Kill(m.Leader, syscall.SIGKILL)
			}
			syscall.Kill(-m.cmd.Process.Pid, syscall.SIGKILL)
			<-m.done
		}
	}
	m.cgroups.remove()
	for _, p := range []string{m.Root, m.dir} {
		if err := unmount(p); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.Remove(m.dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	if m.logf != nil {
		m.logf.Close()
	}
	return errors.Join(errs...)
}

func unmount(p string) error {
	for i := 0; ; i++ {
		err := syscall.Unmount(p, 0)
		if err == nil || errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOENT) {
			return nil // unmounted, or never mounted
		}
		if i == 50 {
			// Still busy: detach lazily so the host is left clean.
			if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil {
				return fmt.Errorf("unmount %s: %w", p, err)
			}
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
}
