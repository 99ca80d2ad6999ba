package suite

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/lodis/lodis/bench/report"
	"github.com/lodis/lodis/internal/testenv"
)

// settle is the pause after stopping a worker and before the next sample,
// so that systemd has finished with the stop when the connection arrives.
const settle = 30 * time.Millisecond

// samples are first-response times of one variant.
type samples struct {
	d    []time.Duration
	pids map[int]bool // distinct worker PIDs that answered (cold: one per sample)
}

// add records a sample answered by worker pid (0: not recorded).
func (s *samples) add(d time.Duration, pid int) {
	s.d = append(s.d, d)
	if pid != 0 {
		if s.pids == nil {
			s.pids = map[int]bool{}
		}
		s.pids[pid] = true
	}
}

// pct returns the p-th percentile (0–100) in ms, by nearest rank.
func (s *samples) pct(p float64) float64 {
	if len(s.d) == 0 {
		return 0
	}
	d := slices.Clone(s.d)
	slices.Sort(d)
	i := int(p/100*float64(len(d))+0.999999) - 1
	return ms(d[min(max(i, 0), len(d)-1)])
}

// coldVariant is one way of answering a first request.
type coldVariant struct {
	name   string
	port   int
	sample func(ctx context.Context) (time.Duration, int, error) // time, and the answering worker's PID if known
	s      samples
}

// coldStage measures the first response on an idle port (the worker stopped
// before each sample, outside the measured time) with the installed,
// hardened unit and with an unhardened copy of it, next to lodis exec'd
// directly with a passed socket (no systemd), a running worker and an
// always-on worker that binds its own port. Samples of the variants are
// interleaved so that the machine's noise falls on all of them alike. Then,
// in a full run, it adds the hardening options to the unhardened unit one at
// a time.
func coldStage(ctx context.Context, e *env) ([]report.Table, error) {
	u, err := e.readUnit()
	if err != nil {
		return nil, err
	}
	if err := e.writeUnits(ctx, map[string]string{instanceUnit(portColdPlain): u.variant([]option{})}); err != nil {
		return nil, err
	}
	ports := []int{portColdHardened, portColdPlain, portWarm}
	if err := e.enable(ctx, ports...); err != nil {
		return nil, err
	}
	defer e.disable(context.WithoutCancel(ctx), ports...)
	if err := e.transient(ctx, "lodis-bench-always-on", nil, lodisBin, "serve", "--listen",
		fmt.Sprintf("127.0.0.1:%d", portAlwaysOn), "--idle-timeout", "0"); err != nil {
		return nil, fmt.Errorf("always-on worker: %w", err)
	}
	defer e.m.Systemctl(context.WithoutCancel(ctx), "stop", "lodis-bench-always-on.service")
	direct, err := newDirectExec(e.lodis, portDirect)
	if err != nil {
		return nil, err
	}
	defer direct.close()
	for _, p := range []int{portWarm, portAlwaysOn} {
		if err := waitServing(ctx, p, "/__/time", 10*time.Second); err != nil {
			return nil, err
		}
	}

	cold := func(port int) func(context.Context) (time.Duration, int, error) {
		return func(ctx context.Context) (time.Duration, int, error) { return e.coldSample(ctx, port) }
	}
	warm := func(port int) func(context.Context) (time.Duration, int, error) {
		return func(ctx context.Context) (time.Duration, int, error) {
			d, err := firstResponse(ctx, port, "/__/time")
			return d, 0, err
		}
	}
	vs := []*coldVariant{
		{name: "cold (hardened)", port: portColdHardened, sample: cold(portColdHardened)},
		{name: "cold unhardened", port: portColdPlain, sample: cold(portColdPlain)},
		{name: "cold, no systemd", port: portDirect, sample: direct.sample},
		{name: "warm", port: portWarm, sample: warm(portWarm)},
		{name: "always-on", port: portAlwaysOn, sample: warm(portAlwaysOn)},
	}
	for i := range e.plan.coldSamples {
		for _, v := range vs {
			d, pid, err := v.sample(ctx)
			if err != nil {
				return nil, fmt.Errorf("%s, sample %d: %w", v.name, i+1, err)
			}
			v.s.add(d, pid)
		}
	}
	// A cold sample must have been answered by a new worker each time.
	for _, v := range vs[:2] {
		if len(v.s.pids) < e.plan.coldSamples {
			return nil, fmt.Errorf("%s: %d distinct workers answered %d samples: some samples were not cold", v.name, len(v.s.pids), e.plan.coldSamples)
		}
	}

	t := report.Table{
		Title:   titleCold,
		Subject: vs[0].name,
		Ratios:  true,
		Note: fmt.Sprintf(`Time from the start of connect() to the last byte of a `+"`GET /__/time`"+` response on a new connection, %d samples per column, the columns interleaved sample by sample. Cold: `+"`systemctl stop lodis@P.service`"+` before each sample (outside the measured time; each cold sample was checked to be answered by a new worker PID), so systemd starts a worker for the connection. The unhardened unit is an instance unit file `+"`/etc/systemd/system/lodis@%d.service`"+`: the installed unit without its %d sandboxing settings, with StartLimitIntervalSec=0. Cold, no systemd: the same binary exec'd by the benchmark on the host with an already-listening socket passed as fd 3 (LISTEN_FDS), the connection made just before the exec. Warm: the socket-activated worker already runs. Always-on: `+"`lodis serve --listen`"+` binding its own port, no socket activation. Goal from the brief: cold p99 ≤ 15 ms; the p50 row holds the same bound.`,
			e.plan.coldSamples, portColdPlain, len(u.harden)),
	}
	for _, v := range vs[1:] {
		t.Peers = append(t.Peers, v.name)
	}
	for _, p := range []struct {
		metric string
		pct    float64
	}{{"first response p50", 50}, {"first response p90", 90}, {"first response p99", 99}} {
		row := report.Row{Metric: p.metric, Unit: "ms", Goal: report.Goal{Op: report.AtMost, Value: 15}, Value: vs[0].s.pct(p.pct)}
		for _, v := range vs[1:] {
			row.Peers = append(row.Peers, v.s.pct(p.pct))
		}
		t.Rows = append(t.Rows, row)
	}
	e.figures[figColdP50], e.figures[figColdP99] = vs[0].s.pct(50), vs[0].s.pct(99)
	e.figures[figColdPlainP50] = vs[1].s.pct(50)
	tables := []report.Table{t}
	if e.plan.ablationSamples == 0 {
		const why = "skipped in a quick run (it takes a few minutes); `make bench` runs it"
		return append(tables, report.Table{Title: titleAblation, NotRun: why}, report.Table{Title: titleGroups, NotRun: why}), nil
	}
	ab, err := e.ablation(ctx, u)
	if err != nil {
		return tables, fmt.Errorf("ablation: %w", err)
	}
	return append(tables, ab...), nil
}

// coldSample stops port's worker, lets systemd settle, and times the first
// response, which starts a new worker. It returns that worker's PID, asked
// outside the measured time.
func (e *env) coldSample(ctx context.Context, port int) (time.Duration, int, error) {
	if err := e.stopWorker(ctx, port); err != nil {
		return 0, 0, err
	}
	time.Sleep(settle)
	d, err := firstResponse(ctx, port, "/__/time")
	if err != nil {
		return 0, 0, err
	}
	h, err := testenv.Health(ctx, port)
	if err != nil {
		return 0, 0, fmt.Errorf("health after a cold start: %w", err)
	}
	return d, h.PID, nil
}

// ablationVariant is a unit variant whose cold start is measured.
type ablationVariant struct {
	name string
	unit string // the instance unit file; "" for the references, already set up
	port int
	s    samples
}

// ablation measures the cold first response with the unhardened unit plus
// one hardening option at a time, then with the installed unit less one
// group of options (the ones systemd enforces with a mount namespace, with
// seccomp, or both), each variant an instance unit file on its own port, all
// sampled interleaved next to the unhardened and installed units.
func (e *env) ablation(ctx context.Context, u *unitFile) ([]report.Table, error) {
	// The references are table 1's ports, still enabled: the unhardened
	// instance unit and the installed unit.
	refs := func() []*ablationVariant {
		return []*ablationVariant{{name: "none (unhardened)", port: portColdPlain}, {name: "all (installed unit)", port: portColdHardened}}
	}
	if len(u.harden) > portLast-portAblation+1 {
		return nil, fmt.Errorf("%d hardening options for %d ports", len(u.harden), portLast-portAblation+1)
	}
	add := refs()
	for i, o := range u.harden {
		add = append(add, &ablationVariant{name: "+ " + o.name, port: portAblation + i, unit: u.variant([]option{o})})
	}
	if err := e.sampleVariants(ctx, add); err != nil {
		return nil, err
	}
	none, all := add[0].s.pct(50), add[1].s.pct(50)
	opts := add[2:]
	sort.SliceStable(opts, func(i, j int) bool { return opts[i].s.pct(50) > opts[j].s.pct(50) })
	one := report.Table{
		Title:   titleAblation,
		Subject: "unhardened + the option",
		Peers:   []string{"unhardened", "all options"},
		Ratios:  true,
		Note: fmt.Sprintf("Cold first response p50 (as in table 1, %d samples per row, all rows interleaved sample by sample, each variant an instance unit file on its own port). Each row adds one sandboxing setting of the installed unit (settings that only work together are added together) to the unhardened unit; the columns repeat the unhardened and fully hardened figures of the same run. Unhardened p50 %.1f ms, all options %.1f ms: the options add %.1f ms in all. Sorted by cost; differences of a few ms are within the noise (some rows come out below the unhardened figure). The costs do not add up: options enforced the same way share the set-up (see 1c).",
			e.plan.ablationSamples, none, all, all-none),
	}
	for _, v := range opts {
		one.Rows = append(one.Rows, report.Row{
			Metric: v.name + ": cold p50", Unit: "ms", Goal: report.Goal{Op: report.AtMost, Value: 15},
			Value: v.s.pct(50), Peers: []float64{none, all},
		})
	}

	groups := refs()
	var names []string
	for i, g := range hardeningGroups {
		var kept []option
		for _, o := range u.harden {
			if !g.has(o.key()) {
				kept = append(kept, o)
			}
		}
		groups = append(groups, &ablationVariant{name: "all but " + g.name, port: portAblation + i, unit: u.variant(kept)})
		names = append(names, fmt.Sprintf("%s: %s", g.name, strings.Join(g.keys, ", ")))
	}
	if err := e.sampleVariants(ctx, groups); err != nil {
		return nil, err
	}
	none, all = groups[0].s.pct(50), groups[1].s.pct(50)
	var saves []string
	for _, v := range groups[2:] {
		saves = append(saves, fmt.Sprintf("leaving out %s saves %.1f ms", strings.TrimPrefix(v.name, "all but "), all-v.s.pct(50)))
	}
	left := report.Table{
		Title:   titleGroups,
		Subject: "installed unit less the group",
		Peers:   []string{"unhardened", "all options"},
		Ratios:  true,
		Note: fmt.Sprintf("Cold first response p50 and p99, %d samples per variant, interleaved, measured after table 1b. Each row removes one group of sandboxing settings from the installed unit, grouped by how systemd enforces them (%s); the columns repeat the unhardened (p50 %.1f ms) and fully hardened (p50 %.1f ms) figures of the same pass. What a group costs is what removing it saves: of the %.1f ms (p50) the options add here, %s.",
			e.plan.ablationSamples, strings.Join(names, "; "), none, all, all-none, strings.Join(saves, ", ")),
	}
	for _, v := range groups[2:] {
		for _, p := range []float64{50, 99} {
			left.Rows = append(left.Rows, report.Row{
				Metric: fmt.Sprintf("%s: cold p%g", v.name, p), Unit: "ms", Goal: report.Goal{Op: report.AtMost, Value: 15},
				Value: v.s.pct(p), Peers: []float64{groups[0].s.pct(p), groups[1].s.pct(p)},
			})
		}
	}
	return []report.Table{one, left}, nil
}

// hardeningGroup is a set of sandboxing settings that systemd enforces the
// same way.
type hardeningGroup struct {
	name string
	keys []string
}

func (g hardeningGroup) has(key string) bool { return contains(g.keys, key) }

// hardeningGroups are the groups of table 1c. DynamicUser= implies
// ProtectSystem=strict and PrivateTmp=yes, so it goes with the mount
// namespace, as does the worker's own root (RootDirectory= with its bind
// mounts); the seccomp group lists the settings systemd implements as
// seccomp filters; PrivateNetwork= is a network namespace of its own.
var hardeningGroups = []hardeningGroup{
	{"mount namespace", mountKeys},
	{"seccomp", seccompKeys},
	{"SystemCallFilter", []string{"SystemCallFilter"}},
	{"both", append(append([]string{}, mountKeys...), seccompKeys...)},
}

var (
	mountKeys = []string{"DynamicUser", "RootDirectory", "ProtectSystem", "PrivateTmp", "PrivateDevices",
		"TemporaryFileSystem", "ProtectControlGroups", "ProtectProc", "ProcSubset", "PrivateIPC", "PrivateUsers"}
	seccompKeys = []string{"SystemCallFilter", "SystemCallArchitectures", "RestrictAddressFamilies", "RestrictNamespaces",
		"RestrictRealtime", "RestrictSUIDSGID", "LockPersonality", "MemoryDenyWriteExecute"}
)

// sampleVariants writes the variants' unit files, enables their ports,
// takes the plan's ablation samples of each, interleaved, then disables the
// ports it enabled and removes the files.
func (e *env) sampleVariants(ctx context.Context, vs []*ablationVariant) error {
	files := map[string]string{}
	var ports []int
	for _, v := range vs {
		if v.unit != "" {
			files[instanceUnit(v.port)] = v.unit
			ports = append(ports, v.port)
		}
	}
	if err := e.writeUnits(ctx, files); err != nil {
		return err
	}
	defer func() {
		ctx := context.WithoutCancel(ctx)
		e.disable(ctx, ports...)
		for f := range files {
			os.Remove(e.m.Root + f)
		}
		e.m.Systemctl(ctx, "daemon-reload")
	}()
	if err := e.enable(ctx, ports...); err != nil {
		return err
	}
	for i := range e.plan.ablationSamples {
		for _, v := range vs {
			d, pid, err := e.coldSample(ctx, v.port)
			if err != nil {
				return fmt.Errorf("%s, sample %d: %w", v.name, i+1, err)
			}
			v.s.add(d, pid)
		}
	}
	for _, v := range vs {
		if len(v.s.pids) < e.plan.ablationSamples {
			return fmt.Errorf("%s: %d distinct workers answered %d samples", v.name, len(v.s.pids), e.plan.ablationSamples)
		}
	}
	return nil
}

// directExec starts lodis for each sample the way systemd would, without
// systemd: a listening socket passed as fd 3 with LISTEN_FDS=1.
type directExec struct {
	bin  string
	port int
	l    *net.TCPListener
	f    *os.File
}

func newDirectExec(bin string, port int) (*directExec, error) {
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("lodis binary: %w", err)
	}
	l, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		return nil, fmt.Errorf("listen on %d: %w", port, err)
	}
	f, err := l.File()
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("listener fd: %w", err)
	}
	return &directExec{bin: bin, port: port, l: l, f: f}, nil
}

// sample connects and sends the request (the kernel queues it), then execs
// lodis serve with the socket, and times from the connect to the end of the
// response. The worker is stopped afterwards, outside the measured time.
func (d *directExec) sample(ctx context.Context) (time.Duration, int, error) {
	p, err := sendRequest(ctx, d.port, "/__/time")
	if err != nil {
		return 0, 0, err
	}
	// LISTEN_PID must be the worker's own PID: a shell sets it and execs.
	cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" "$@"`, d.bin, "serve",
		"--port", fmt.Sprint(d.port), "--idle-timeout", "0", "--log-level", "error")
	cmd.Env = []string{"LISTEN_FDS=1", "LISTEN_FDNAMES=http", "PATH=/usr/bin:/bin"}
	cmd.ExtraFiles = []*os.File{d.f}
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		p.c.Close()
		return 0, 0, fmt.Errorf("exec lodis: %w", err)
	}
	took, rerr := p.finish()
	cmd.Process.Signal(syscall.SIGTERM)
	werr := cmd.Wait()
	if rerr != nil {
		return 0, 0, rerr
	}
	var ee *exec.ExitError
	if werr != nil && !errors.As(werr, &ee) {
		return 0, 0, fmt.Errorf("lodis exec'd directly: %w", werr)
	}
	return took, cmd.Process.Pid, nil
}

func (d *directExec) close() {
	d.f.Close()
	d.l.Close()
}
