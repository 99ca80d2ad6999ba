package suite

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/unit"

	"github.com/lodis/lodis/internal/testenv"
	unitfiles "github.com/lodis/lodis/units"
)

// Paths inside the machine.
const (
	helloPath    = "/usr/local/libexec/lodis-bench/bench-hello"
	confDir      = "/etc/lodis-bench"
	templateUnit = "/usr/lib/systemd/system/lodis@.service"
	lodisBin     = "/usr/bin/lodis"
)

func socketUnit(port int) string  { return fmt.Sprintf("lodis@%d.socket", port) }
func serviceUnit(port int) string { return fmt.Sprintf("lodis@%d.service", port) }

func units(f func(int) string, ports []int) []string {
	out := make([]string, len(ports))
	for i, p := range ports {
		out[i] = f(p)
	}
	return out
}

// enable enables and starts the sockets of ports (no worker starts).
func (e *env) enable(ctx context.Context, ports ...int) error {
	_, err := e.m.Systemctl(ctx, append([]string{"enable", "--now"}, units(socketUnit, ports)...)...)
	return err
}

// disable stops the workers and sockets of ports and disables them.
func (e *env) disable(ctx context.Context, ports ...int) {
	args := append([]string{"disable", "--now"}, units(socketUnit, ports)...)
	e.m.Systemctl(ctx, append(args, units(serviceUnit, ports)...)...)
	e.m.Systemctl(ctx, append([]string{"reset-failed"}, units(serviceUnit, ports)...)...)
}

// stopWorker stops the worker of port and waits until it is gone; the
// socket keeps listening.
func (e *env) stopWorker(ctx context.Context, port int) error {
	_, err := e.m.Systemctl(ctx, "stop", serviceUnit(port))
	return err
}

// writeUnit writes an instance unit file or drop-in inside the machine
// (path is absolute there) and reloads systemd.
func (e *env) writeUnits(ctx context.Context, files map[string]string) error {
	for path, body := range files {
		if err := e.m.WriteFile(path, []byte(body), 0o644); err != nil {
			return err
		}
		if port, ok := variantPort(path); ok {
			// The template's worker drop-in applies to every instance,
			// a unit file of its own or not: an empty drop-in of the same
			// name in /etc masks it for this port.
			if err := e.m.WriteFile(dropIn(port, strings.TrimSuffix(unitfiles.WorkerDropIn, ".conf")), nil, 0o644); err != nil {
				return err
			}
		}
	}
	_, err := e.m.Systemctl(ctx, "daemon-reload")
	return err
}

// waitServing waits until port answers path with 200, for at most timeout.
func waitServing(ctx context.Context, port int, path string, timeout time.Duration) error {
	return testenv.WaitFor(ctx, timeout, func() (bool, string) {
		d, err := firstResponse(ctx, port, path)
		if err != nil {
			return false, err.Error()
		}
		return d > 0, ""
	})
}

// firstResponse opens a new connection to port, sends GET path with
// Connection: close and reads the whole response. It returns the time from
// the start of the connect to the last byte of the body, and an error unless
// the status is 200.
func firstResponse(ctx context.Context, port int, path string) (time.Duration, error) {
	p, err := sendRequest(ctx, port, path)
	if err != nil {
		return 0, err
	}
	return p.finish()
}

// pending is a request sent on a new connection, its response not yet read.
type pending struct {
	port  int
	start time.Time
	c     net.Conn
}

// sendRequest connects to port and sends GET path with Connection: close.
// The kernel completes the connect even while no process accepts (the
// socket's backlog holds it).
func sendRequest(ctx context.Context, port int, path string) (*pending, error) {
	deadline := time.Now().Add(10 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	start := time.Now()
	c, err := (&net.Dialer{Deadline: deadline}).DialContext(ctx, "tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return nil, fmt.Errorf("connect to %d: %w", port, err)
	}
	c.SetDeadline(deadline)
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n", path, port); err != nil {
		c.Close()
		return nil, fmt.Errorf("send to %d: %w", port, err)
	}
	return &pending{port: port, start: start, c: c}, nil
}

// finish reads the whole response and closes the connection. It returns the
// time from the start of the connect to the last byte of the body.
func (p *pending) finish() (time.Duration, error) {
	defer p.c.Close()
	resp, err := http.ReadResponse(bufio.NewReader(p.c), nil)
	if err != nil {
		return 0, fmt.Errorf("response from %d: %w", p.port, err)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	took := time.Since(p.start)
	resp.Body.Close()
	if err != nil {
		return 0, fmt.Errorf("response body from %d: %w", p.port, err)
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("port %d: status %s", p.port, resp.Status)
	}
	return took, nil
}

// unitFile is a systemd unit file split into what lodis needs to run and
// its hardening, so that variants with more or less hardening can be written.
type unitFile struct {
	unit    []string // [Unit] lines, StartLimitIntervalSec= excluded
	base    []string // [Service] lines that make the worker run
	harden  []option // [Service] sandboxing, grouped by option
	install []string
}

// option is one hardening setting, with the lines it needs together (e.g.
// DynamicUser= and User=).
type option struct {
	name  string // e.g. "PrivateUsers=yes"
	lines []string
}

// key is the setting's name, e.g. "PrivateUsers".
func (o option) key() string {
	k, _, _ := strings.Cut(o.lines[0], "=")
	return k
}

// together groups settings that only make sense with another one: the key
// is shown and measured as part of the value's option.
var together = map[string]string{"User": "DynamicUser", "AmbientCapabilities": "CapabilityBoundingSet",
	"SystemCallErrorNumber": "SystemCallFilter", "TasksMax": "MemoryMax",
	"MountAPIVFS": "RootDirectory", "BindReadOnlyPaths": "RootDirectory"}

// readUnit reads the installed worker template from the machine: the
// template itself and its worker drop-in, which holds the [Service] section.
func (e *env) readUnit() (*unitFile, error) {
	var text []byte
	for _, p := range []string{templateUnit, templateUnit + ".d/" + unitfiles.WorkerDropIn} {
		b, err := os.ReadFile(filepath.Join(e.m.Root, p))
		if err != nil {
			return nil, fmt.Errorf("read the installed worker unit: %w", err)
		}
		text = append(append(text, b...), '\n')
	}
	return parseUnit(string(text))
}

func parseUnit(text string) (*unitFile, error) {
	opts, err := unit.DeserializeOptions(strings.NewReader(text))
	if err != nil {
		return nil, fmt.Errorf("worker unit: %w", err)
	}
	u := &unitFile{}
	index := map[string]int{}
	var deferred [][2]string
	for _, o := range opts {
		key, l := o.Name, o.Name+"="+o.Value
		switch o.Section {
		case "Unit":
			if key != "StartLimitIntervalSec" {
				u.unit = append(u.unit, l)
			}
		case "Service":
			switch {
			case !unitfiles.IsSandbox(key) && key != "User":
				u.base = append(u.base, l)
			case together[key] != "":
				deferred = append(deferred, [2]string{together[key], l})
			case index[key] > 0:
				o := &u.harden[index[key]-1]
				o.lines = append(o.lines, l)
				o.name += " " + strings.TrimPrefix(l, key+"=")
			default:
				u.harden = append(u.harden, option{name: l, lines: []string{l}})
				index[key] = len(u.harden)
			}
		case "Install":
			u.install = append(u.install, l)
		default:
			return nil, fmt.Errorf("worker unit: %q in section [%s], which the worker unit does not have", l, o.Section)
		}
	}
	for _, d := range deferred {
		i := index[d[0]]
		if i == 0 {
			return nil, fmt.Errorf("worker unit: %q without %s=", d[1], d[0])
		}
		u.harden[i-1].lines = append(u.harden[i-1].lines, d[1])
	}
	if len(u.base) == 0 || len(u.harden) == 0 {
		return nil, fmt.Errorf("worker unit: %d run settings, %d hardening settings: not the lodis worker unit", len(u.base), len(u.harden))
	}
	return u, nil
}

// variant writes the unit with the given hardening options (all of them for
// nil, none for an empty slice), with StartLimitIntervalSec=0 so that
// repeated activations never hit the start limit, and extra [Service] lines.
func (u *unitFile) variant(opts []option, extra ...string) string {
	if opts == nil {
		opts = u.harden
	}
	var b strings.Builder
	b.WriteString("# Written by lodis-bench: a variant of lodis@.service for one port.\n[Unit]\n")
	for _, l := range u.unit {
		b.WriteString(l + "\n")
	}
	b.WriteString("StartLimitIntervalSec=0\n\n[Service]\n")
	for _, l := range u.base {
		b.WriteString(l + "\n")
	}
	for _, o := range opts {
		for _, l := range o.lines {
			b.WriteString(l + "\n")
		}
	}
	for _, l := range extra {
		b.WriteString(l + "\n")
	}
	if len(u.install) > 0 {
		b.WriteString("\n[Install]\n")
		for _, l := range u.install {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// instanceUnit is the path of a unit file that replaces the template for
// one port.
func instanceUnit(port int) string {
	return "/etc/systemd/system/" + serviceUnit(port)
}

// variantPort returns the port of an instanceUnit path.
func variantPort(path string) (int, bool) {
	var port int
	if _, err := fmt.Sscanf(path, "/etc/systemd/system/lodis@%d.service", &port); err != nil || instanceUnit(port) != path {
		return 0, false
	}
	return port, true
}

// dropIn is the path of a drop-in for one port's worker.
func dropIn(port int, name string) string {
	return fmt.Sprintf("/etc/systemd/system/%s.d/%s.conf", serviceUnit(port), name)
}

// execStart is a drop-in body replacing the worker's command line.
func execStart(args string) string {
	return "[Service]\nExecStart=\nExecStart=/usr/bin/lodis exec-app -- serve --port %i " + args + "\n"
}

// unitPIDs returns the PIDs, as the machine sees them, of every process in
// unit's control group; none when the unit is not running.
func (e *env) unitPIDs(ctx context.Context, unit string) ([]int, error) {
	if st := e.m.Prop(ctx, unit, "ActiveState"); st != "active" && st != "reloading" && st != "deactivating" {
		return nil, nil
	}
	cg := e.m.Prop(ctx, unit, "ControlGroup")
	if cg == "" {
		return nil, nil
	}
	// The machine may mount cgroup v2 at /sys/fs/cgroup or, in hybrid mode,
	// at unified/ (systemd's own tree at systemd/). The group goes away when
	// its last process exits: absent means none.
	out, err := e.m.Sh(ctx, fmt.Sprintf(`for d in /sys/fs/cgroup/unified /sys/fs/cgroup/systemd /sys/fs/cgroup; do
		f=$d%s/cgroup.procs; if [ -e "$f" ]; then cat "$f"; exit; fi; done`, cg))
	if err != nil {
		return nil, fmt.Errorf("processes of %s: %w", unit, err)
	}
	var ps []int
	for _, f := range strings.Fields(out) {
		p, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("processes of %s: %q", unit, out)
		}
		// 0 stands for a process the reader cannot see (one exiting, say).
		if p > 0 {
			ps = append(ps, p)
		}
	}
	return ps, nil
}

// rss returns the summed resident set size in bytes of the processes pids
// inside the machine, read from /proc/PID/status as the machine sees it. A
// process that has exited meanwhile counts for nothing.
func (e *env) rss(ctx context.Context, pids []int) (uint64, error) {
	var total uint64
	for _, p := range pids {
		out, err := e.m.Sh(ctx, fmt.Sprintf("f=/proc/%d/status; [ ! -e $f ] || grep '^VmRSS:' $f || true", p))
		if err != nil {
			return 0, fmt.Errorf("rss of pid %d: %w", p, err)
		}
		if strings.TrimSpace(out) == "" {
			continue // exited, or a kernel thread
		}
		f := strings.Fields(out)
		if len(f) < 2 {
			return 0, fmt.Errorf("rss of pid %d: %q", p, out)
		}
		kb, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("rss of pid %d: %w", p, err)
		}
		total += kb << 10
	}
	return total, nil
}

// transient starts argv inside the machine as a transient service named
// unit (systemd-run), stopping any earlier one of that name first.
func (e *env) transient(ctx context.Context, unit string, props []string, argv ...string) error {
	e.m.Systemctl(ctx, "stop", unit+".service")
	e.m.Systemctl(ctx, "reset-failed", unit+".service")
	args := []string{"systemd-run", "--quiet", "--unit=" + unit, "--collect"}
	for _, p := range props {
		args = append(args, "--property="+p)
	}
	_, err := e.m.Output(ctx, append(append(args, "--"), argv...)...)
	return err
}

// journal returns the last lines unit logged, for error messages.
func (e *env) journal(ctx context.Context, unit string) string {
	out, _ := e.m.Output(ctx, "journalctl", "-q", "--no-pager", "-n", "15", "-u", unit)
	return strings.TrimSpace(out)
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
