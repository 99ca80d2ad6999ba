// Command sandbox-cost measures what candidate sandboxes of the lodis worker
// cost at a cold start, and how systemd-analyze security scores them.
//
//	go run ./test/isolation/cmd/sandbox-cost [-samples 40] [-variants FILE] [-only REGEXP]
//
// It boots a throwaway real systemd (package test/machine), installs lodis,
// creates the system user lodis-app (sysusers.d) for variants with a static
// User=, and writes each variant as an instance unit file
// /etc/systemd/system/lodis@PORT.service on its own port (18650 and up):
// the installed lodis@.service with its sandboxing settings (everything from
// the "# Sandboxing" comment to [Install]) replaced by the variant's, and
// StartLimitIntervalSec=0. Then it takes the cold first response of every
// variant, interleaved sample by sample (stop the worker, wait 30 ms, connect
// to the idle socket and time the first HTTP answer to GET /__/time; the
// answer must come from a new worker PID), and prints a Markdown table:
// p50/p90/p99 in ms, the p50 ratio to the variant named "none", and the
// exposure score.
//
// The variants file holds blocks:
//
//	=== name
//	@installed          the installed unit's sandboxing lines
//	-Key                drop every line that sets Key=
//	Key=value           add a line
//	@file PATH          the sandboxing lines of a file (a drop-in's [Service])
//	@tmpfiles PATH      install a tmpfiles.d(5) file in the machine and apply it
//	$ command           run a shell command in the machine before sampling
//	                    (to prepare a root directory, say)
//
// PATH is read on the host, relative to the working directory.
//
// Outside a machine that can boot systemd-nspawn (root, systemd-container)
// it fails with the reason.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/lodis/lodis/internal/testenv"
	"github.com/lodis/lodis/test/isolation"
)

const (
	firstPort = 18650
	lastPort  = 18689
	settle    = 30 * time.Millisecond
	template  = isolation.WorkerDropIn
)

// variant is one sandbox to measure.
type variant struct {
	name  string
	lines []string // [Service] sandboxing lines
	port  int
	score string
	d     []time.Duration
	fork  []time.Duration // connect → systemd forks the worker (ExecMainStartTimestamp)
	setup []time.Duration // fork → the worker's own start time (/__/health "started")
	cpu   []time.Duration // CPU time of the worker's main thread: the sandbox set-up in the forked child, then the app's own
	pids  map[int]bool
}

func main() {
	samples := flag.Int("samples", 40, "cold samples per variant")
	file := flag.String("variants", "test/isolation/testdata/sandbox-variants.txt", "variants file")
	only := flag.String("only", "", "measure only variants whose name matches this regular expression (and none)")
	unified := flag.Bool("unified", false, "boot the machine with the unified cgroup hierarchy (SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1), as a Debian 12 host has it")
	flag.Parse()
	if *unified {
		os.Setenv("SYSTEMD_NSPAWN_UNIFIED_HIERARCHY", "1")
	}
	if err := run(*samples, *file, *only); err != nil {
		fmt.Fprintln(os.Stderr, "sandbox-cost:", err)
		os.Exit(1)
	}
}

func run(samples int, file, only string) error {
	if samples < 1 {
		return fmt.Errorf("bad -samples %d: want at least 1", samples)
	}
	text, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	blocks, err := parseVariants(string(text))
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	if only != "" {
		re, err := regexp.Compile(only)
		if err != nil {
			return fmt.Errorf("bad -only: %w", err)
		}
		blocks = slices.DeleteFunc(blocks, func(b block) bool { return b.name != "none" && !re.MatchString(b.name) })
	}
	if len(blocks) > lastPort-firstPort+1 {
		return fmt.Errorf("%d variants for %d ports", len(blocks), lastPort-firstPort+1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	bctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	m, err := testenv.Boot(bctx, testenv.Options{Name: "lodis-sandbox-cost"})
	if err != nil {
		return err
	}
	defer m.Close()
	repo, err := testenv.RepoRoot()
	if err != nil {
		return err
	}
	if err := m.InstallLodis(bctx, repo); err != nil {
		return err
	}
	if err := m.WriteFile("/etc/sysusers.d/lodis-app.conf", []byte("u lodis-app - \"lodis app\" -\n"), 0o644); err != nil {
		return err
	}
	if _, err := m.Sh(bctx, "systemd-sysusers lodis-app.conf"); err != nil {
		return err
	}
	installed, err := os.ReadFile(filepath.Join(m.Root, template))
	if err != nil {
		return err
	}
	base, sandbox, err := isolation.SplitWorker(string(installed))
	if err != nil {
		return err
	}
	var vs []*variant
	for _, b := range blocks {
		for _, f := range b.tmpfiles {
			text, err := os.ReadFile(f)
			if err != nil {
				return err
			}
			name := "/etc/tmpfiles.d/" + filepath.Base(f) + ".conf"
			if err := m.WriteFile(name, text, 0o644); err != nil {
				return err
			}
			if _, err := m.Output(bctx, "systemd-tmpfiles", "--create", name); err != nil {
				return fmt.Errorf("variant %q: %w", b.name, err)
			}
		}
		for _, c := range b.setup {
			if _, err := m.Sh(bctx, c); err != nil {
				return fmt.Errorf("variant %q: %w", b.name, err)
			}
		}
	}
	for i, b := range blocks {
		v := &variant{name: b.name, port: firstPort + i, lines: b.apply(sandbox), pids: map[int]bool{}}
		unit := isolation.Variant(base, v.lines)
		if err := m.WriteFile(isolation.VariantPath(v.port), []byte(unit), 0o644); err != nil {
			return err
		}
		vs = append(vs, v)
	}
	if _, err := m.Systemctl(ctx, "daemon-reload"); err != nil {
		return err
	}
	for _, v := range vs {
		if _, err := m.Systemctl(ctx, "start", fmt.Sprintf("lodis@%d.socket", v.port)); err != nil {
			return err
		}
		out, _ := m.Output(ctx, "systemd-analyze", "security", "--no-pager", fmt.Sprintf("lodis@%d.service", v.port))
		v.score = exposure(out)
		if _, _, _, err := sample(ctx, v.port); err != nil {
			j, _ := m.Output(ctx, "journalctl", "-q", "--no-pager", "-n", "10", "-u", fmt.Sprintf("lodis@%d.service", v.port))
			return fmt.Errorf("variant %q does not serve: %w\n%s", v.name, err, j)
		}
	}
	load, _ := os.ReadFile("/proc/loadavg")
	start := time.Now()
	for i := range samples {
		for _, v := range vs {
			if _, err := m.Systemctl(ctx, "stop", fmt.Sprintf("lodis@%d.service", v.port)); err != nil {
				return err
			}
			time.Sleep(settle)
			t0 := time.Now()
			d, pid, started, err := sample(ctx, v.port)
			if err != nil {
				return fmt.Errorf("%s, sample %d: %w", v.name, i+1, err)
			}
			v.d = append(v.d, d)
			v.pids[pid] = true
			forked, err := execMainStart(ctx, m, v.port)
			if err != nil {
				return fmt.Errorf("%s, sample %d: %w", v.name, i+1, err)
			}
			v.fork = append(v.fork, forked.Sub(t0))
			v.setup = append(v.setup, started.Sub(forked))
			cpu, err := mainThreadCPU(ctx, m, pid)
			if err != nil {
				return fmt.Errorf("%s, sample %d: %w", v.name, i+1, err)
			}
			v.cpu = append(v.cpu, cpu)
		}
	}
	for _, v := range vs {
		if len(v.pids) < samples {
			return fmt.Errorf("%s: %d distinct workers answered %d samples: some were not cold", v.name, len(v.pids), samples)
		}
	}
	report(os.Stdout, vs, samples, strings.TrimSpace(string(load)), time.Since(start))
	return nil
}

// block is a variant as written in the file.
type block struct {
	name     string
	ops      []string
	setup    []string // shell commands
	tmpfiles []string // tmpfiles.d files on the host
}

func parseVariants(text string) ([]block, error) {
	var bs []block
	for n, l := range strings.Split(text, "\n") {
		l = strings.TrimSpace(l)
		switch {
		case l == "" || strings.HasPrefix(l, "#"):
		case strings.HasPrefix(l, "=== "):
			bs = append(bs, block{name: strings.TrimSpace(l[4:])})
		case len(bs) == 0:
			return nil, fmt.Errorf("line %d: %q before the first === name", n+1, l)
		case strings.HasPrefix(l, "$ "):
			bs[len(bs)-1].setup = append(bs[len(bs)-1].setup, l[2:])
		case strings.HasPrefix(l, "@tmpfiles "):
			bs[len(bs)-1].tmpfiles = append(bs[len(bs)-1].tmpfiles, strings.TrimSpace(l[len("@tmpfiles "):]))
		case strings.HasPrefix(l, "@file "):
			b, err := os.ReadFile(strings.TrimSpace(l[len("@file "):]))
			if err != nil {
				return nil, fmt.Errorf("line %d: %w", n+1, err)
			}
			bs[len(bs)-1].ops = append(bs[len(bs)-1].ops, isolation.SandboxLines(string(b))...)
		case l == "@installed" || strings.HasPrefix(l, "-") || strings.Contains(l, "="):
			bs[len(bs)-1].ops = append(bs[len(bs)-1].ops, l)
		default:
			return nil, fmt.Errorf("line %d: %q is not @installed, -Key, Key=value or $ command", n+1, l)
		}
	}
	if len(bs) == 0 {
		return nil, errors.New("no variants")
	}
	return bs, nil
}

// apply returns the variant's sandboxing lines.
func (b block) apply(installed []string) []string {
	var out []string
	for _, op := range b.ops {
		switch {
		case op == "@installed":
			out = append(out, installed...)
		case strings.HasPrefix(op, "-"):
			key := op[1:] + "="
			out = slices.DeleteFunc(out, func(l string) bool { return strings.HasPrefix(l, key) })
		default:
			out = append(out, op)
		}
	}
	return out
}

var exposureRE = regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`)

func exposure(out string) string {
	if m := exposureRE.FindStringSubmatch(out); m != nil {
		return m[1]
	}
	return "?"
}

// sample times the first answer to GET /__/time on a new connection, then
// asks /__/health which worker answered and when it started.
func sample(ctx context.Context, port int) (time.Duration, int, time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	start := time.Now()
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return 0, 0, time.Time{}, err
	}
	defer c.Close()
	dl, _ := ctx.Deadline()
	c.SetDeadline(dl)
	fmt.Fprintf(c, "GET /__/time HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, 0, time.Time{}, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	took := time.Since(start)
	resp.Body.Close()
	if err != nil {
		return 0, 0, time.Time{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, 0, time.Time{}, fmt.Errorf("status %s", resp.Status)
	}
	h, err := testenv.Health(ctx, port)
	if err != nil {
		return 0, 0, time.Time{}, err
	}
	started, err := time.Parse(time.RFC3339Nano, h.Started)
	if err != nil {
		return 0, 0, time.Time{}, fmt.Errorf("health answer of port %d: started %q: %w", port, h.Started, err)
	}
	return took, h.PID, started, nil
}

// mainThreadCPU is the CPU time the process's main thread has used
// (/proc/PID/schedstat, ns): the forked child's work before the exec
// counts, as it is the same thread.
func mainThreadCPU(ctx context.Context, m *testenv.Machine, pid int) (time.Duration, error) {
	out, err := m.Output(ctx, "cat", fmt.Sprintf("/proc/%d/schedstat", pid))
	if err != nil {
		return 0, err
	}
	f := strings.Fields(out)
	if len(f) == 0 {
		return 0, fmt.Errorf("schedstat of %d: %q", pid, out)
	}
	ns, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("schedstat of %d: %w", pid, err)
	}
	return time.Duration(ns), nil
}

// execMainStart is when systemd forked the port's running worker
// (ExecMainStartTimestamp, in µs).
func execMainStart(ctx context.Context, m *testenv.Machine, port int) (time.Time, error) {
	out, err := m.Output(ctx, "systemctl", "show", "--timestamp=us+utc", "-P", "ExecMainStartTimestamp", fmt.Sprintf("lodis@%d.service", port))
	if err != nil {
		return time.Time{}, err
	}
	t, err := time.Parse("Mon 2006-01-02 15:04:05.000000 MST", strings.TrimSpace(out))
	if err != nil {
		return time.Time{}, fmt.Errorf("ExecMainStartTimestamp: %w", err)
	}
	return t, nil
}

func pct(d []time.Duration, p float64) float64 {
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(p/100*float64(len(s))+0.999999) - 1
	return float64(s[min(max(i, 0), len(s)-1)]) / float64(time.Millisecond)
}

func report(w io.Writer, vs []*variant, samples int, load string, took time.Duration) {
	var none float64
	for _, v := range vs {
		if v.name == "none" {
			none = pct(v.d, 50)
		}
	}
	fmt.Fprintf(w, "Cold first response, %d samples per variant interleaved, %s in all; load average at the start: %s.\n\n", samples, took.Round(time.Second), load)
	fmt.Fprintln(w, "| variant | p50 ms | p90 ms | p99 ms | p50 / none | connect→fork p50 | fork→app p50 | main thread CPU p50 | exposure |")
	fmt.Fprintln(w, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	for _, v := range vs {
		ratio := "—"
		if none > 0 {
			ratio = strconv.FormatFloat(pct(v.d, 50)/none, 'f', 2, 64)
		}
		fmt.Fprintf(w, "| %s | %.1f | %.1f | %.1f | %s | %.1f | %.1f | %.1f | %s |\n", v.name, pct(v.d, 50), pct(v.d, 90), pct(v.d, 99), ratio,
			pct(v.fork, 50), pct(v.setup, 50), pct(v.cpu, 50), v.score)
	}
	fmt.Fprintln(w, "\nFirst response: from the connect to the last byte of the answer. connect→fork: to systemd's fork of the worker",
		"(ExecMainStartTimestamp). fork→app: from the fork to the worker's own start time (/__/health \"started\"): the sandbox",
		"set-up in the forked child, the exec and the runtime's start. Main thread CPU: /proc/PID/schedstat of the worker's main",
		"thread after its first answer: the forked child's set-up plus the app's own start, in CPU time, which the machine's load",
		"does not inflate. Exposure: systemd-analyze security.")
	fmt.Fprintln(w, "\nVariants (sandboxing lines of each):")
	for _, v := range vs {
		fmt.Fprintf(w, "\n%s (port %d):\n", v.name, v.port)
		for _, l := range v.lines {
			fmt.Fprintln(w, "    "+l)
		}
	}
}
