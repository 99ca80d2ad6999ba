// Package suite is `make bench`: it boots one throwaway real systemd
// (package internal/testenv), installs lodis in it the way an operator would,
// runs the benchmark stages one after another against lodis and its
// baselines (bare net/http, nginx, a naive systemctl restart), and writes
// one markdown report with SVG plots in which every figure stands next to
// its goal and its peers.
//
// Load comes from package internal/load on the host, to 127.0.0.1 only (the
// machine shares the host's network), bounded in count and time. Ports
// 18500–18599 are the benchmark's own (see ports.go).
//
// A stage whose prerequisite is missing (the supervisor, the upgrade
// roll-out) is written as "not run" with its reason, never as a number.
package suite

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/lodis/lodis/bench/report"
	"github.com/lodis/lodis/internal/testenv"
)

// Options configure Run. The zero value runs the full benchmark from the
// working directory's source tree and writes into its bench/results/
// directory.
type Options struct {
	// Quick runs every stage briefly (fewer samples, shorter loads): the whole
	// run takes under two minutes. Its figures are noisier; the report says
	// it was quick.
	Quick bool

	// OutDir receives report.md and the SVG plots. Default: ResultsDir
	// under Repo.
	OutDir string

	// Command is the exact command line recorded in the report. Default
	// "lodis-bench" plus " --quick" when Quick is set.
	Command string

	// Repo is the lodis source tree to build and install. Default:
	// testenv.RepoRoot, the lodis module as seen from the working directory.
	Repo string

	// Stages, if not empty, names the stages to run (see StageNames); the
	// others are written as not run. Default: all.
	Stages []string

	// Progress receives one line as each stage starts and ends (stage,
	// elapsed time, estimated time left). Default: os.Stderr.
	Progress io.Writer
}

// ReportFile is the name of the report Run writes in Options.OutDir.
const ReportFile = "report.md"

// ResultsDir is where, in the source tree, Run writes by default: the
// committed report, its plots and `make bench-micro`'s micro.txt.
const ResultsDir = "bench/results"

// Run boots the machine, runs the stages and writes the report and its plots.
// It returns the path of the report. A stage that fails is written as not
// run with its error and Run goes on with the next one, then returns every
// stage's error joined; an error before the first stage (no machine, no
// build) writes nothing.
func Run(ctx context.Context, o Options) (string, error) {
	o, err := o.normalized()
	if err != nil {
		return "", err
	}
	stages, err := selectStages(o.Stages)
	if err != nil {
		return "", err
	}
	mach, err := report.DetectMachine(ctx, o.Command)
	if err != nil {
		return "", fmt.Errorf("describe the machine: %w", err)
	}
	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return "", fmt.Errorf("output dir: %w", err)
	}
	load0 := loadAverage()
	prog := newProgress(o.Progress, o.Quick, stages)

	prog.begin("machine")
	e, err := setup(ctx, o)
	if e != nil {
		defer e.close()
	}
	if err != nil {
		return "", err
	}
	prog.end()

	var tables []report.Table
	var errs []error
	for _, s := range allStages {
		if !contains(stages, s.name) {
			tables = append(tables, skipped(s, "not selected in this run (--stages)")...)
			continue
		}
		prog.begin(s.title)
		busy := loadAverage()
		ts, err := s.run(ctx, e)
		for i := range ts {
			if ts[i].NotRun == "" {
				ts[i].Note = strings.TrimSpace(ts[i].Note + "\n\nLoad average (1, 5, 15 min) of the shared machine when this stage began: " + busy + ".")
				break
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("stage %s: %w", s.name, err))
			ts = complete(s, ts, "failed: "+oneLine(err.Error()))
		}
		tables = append(tables, ts...)
		prog.end()
		if ctx.Err() != nil {
			break
		}
	}
	r := &report.Report{
		Title:   "lodis benchmarks",
		Machine: mach,
		Summary: summary(o, e, load0, loadAverage(), prog.elapsed()),
		Tables:  tables,
	}
	path := filepath.Join(o.OutDir, ReportFile)
	if err := r.WriteFile(path); err != nil {
		return "", errors.Join(append(errs, err)...)
	}
	prog.done(path)
	return path, errors.Join(errs...)
}

func (o Options) normalized() (Options, error) {
	if o.Repo == "" {
		r, err := testenv.RepoRoot()
		if err != nil {
			return o, err
		}
		o.Repo = r
	}
	if o.OutDir == "" {
		o.OutDir = filepath.Join(o.Repo, ResultsDir)
	}
	if o.Command == "" {
		o.Command = "lodis-bench"
		if o.Quick {
			o.Command += " --quick"
		}
	}
	if o.Progress == nil {
		o.Progress = os.Stderr
	}
	return o, nil
}

// env is what every stage works with: the machine, the plan and what is
// installed in it.
type env struct {
	m     *testenv.Machine
	quick bool
	plan  plan
	repo  string
	out   string // Options.OutDir
	has   features
	lodis string // lodis binary on the host, as installed in the machine
	tmp   string // host scratch dir, removed at close
	// version is what the installed lodis says of itself (lodis version).
	version string
	// variants waits for the binaries the lodis upgrade runs drop.
	variants func() (*variants, error)
	// others is the number of other test machines running on the host when
	// this one booted: the run shares the CPUs with them.
	others int
	// figures are what the stages measured for the goals table, by key
	// (fig* constants).
	figures map[string]float64
}

// features are the parts of lodis that other stages depend on, as found
// installed in the machine.
type features struct {
	supervisor  bool // lodis-supervisor.service
	upgrade     bool // lodis-upgrade.path
	nginxConfig bool // lodis nginx-config
}

// setupEstimate is the usual time to boot the machine and install lodis.
const setupEstimate = 10 * time.Second

// setup builds what the stages need on the host, boots the machine, installs
// lodis, the bare net/http server and the nginx config directory in it.
func setup(ctx context.Context, o Options) (*env, error) {
	if err := testenv.Check(); err != nil {
		return nil, err
	}
	if _, err := exec.LookPath("nginx"); err != nil {
		return nil, errors.New("nginx not found: install it with 'apt-get install -y nginx-light' (test/deps.sh does)")
	}
	tmp, err := os.MkdirTemp("", "lodis-bench-")
	if err != nil {
		return nil, fmt.Errorf("scratch dir: %w", err)
	}
	e := &env{figures: map[string]float64{}, quick: o.Quick, plan: planFor(o.Quick), repo: o.Repo, out: o.OutDir, tmp: tmp,
		lodis: filepath.Join(o.Repo, "bin", "lodis")}
	// The upgrade stage drops binaries built from this tree: build them
	// while the machine boots.
	e.variants = func() (*variants, error) { return nil, errors.New("no lodis-upgrade.path in this tree") }
	if _, err := os.Stat(filepath.Join(o.Repo, "units", "lodis-upgrade.path")); err == nil {
		e.variants = buildVariants(o.Repo, tmp)
	}
	// bench-hello is in the benchmark's own module, bench/.
	build := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(tmp, "bench-hello"), "./cmd/bench-hello")
	build.Dir = filepath.Join(o.Repo, "bench")
	if out, err := build.CombinedOutput(); err != nil {
		return e, fmt.Errorf("build bench-hello: %w: %s", err, out)
	}
	e.others = otherMachines()
	e.m, err = testenv.Boot(ctx, testenv.Options{Name: "lodis-bench"})
	if err != nil {
		return e, fmt.Errorf("boot the machine: %w", err)
	}
	if err := e.m.InstallLodis(ctx, o.Repo); err != nil {
		return e, fmt.Errorf("install lodis: %w", err)
	}
	hello, err := os.ReadFile(filepath.Join(tmp, "bench-hello"))
	if err != nil {
		return e, fmt.Errorf("read bench-hello: %w", err)
	}
	if err := e.m.WriteFile(helloPath, hello, 0o755); err != nil {
		return e, err
	}
	e.has = e.detect(ctx)
	out, err := e.m.Output(ctx, lodisBin, "version")
	if err != nil {
		return e, fmt.Errorf("installed lodis: %w", err)
	}
	e.version = strings.Join(strings.Fields(strings.ReplaceAll(out, "\n", "; ")), " ")
	return e, nil
}

// detect looks for the parts of lodis that some stages need.
func (e *env) detect(ctx context.Context) features {
	unit := func(name string) bool {
		_, err := e.m.Systemctl(ctx, "cat", name)
		return err == nil
	}
	_, err := e.m.Output(ctx, "/usr/bin/lodis", "nginx-config", "-h")
	return features{
		supervisor:  unit("lodis-supervisor.service"),
		upgrade:     unit("lodis-upgrade.path"),
		nginxConfig: err == nil,
	}
}

func (e *env) close() {
	if e.m != nil {
		e.m.Close()
	}
	os.RemoveAll(e.tmp)
}

// complete returns the tables a failed stage measured before it failed,
// and each of its other tables marked not run for reason.
func complete(s stage, done []report.Table, reason string) []report.Table {
	var out []report.Table
	for _, title := range s.titles {
		t := report.Table{Title: title, NotRun: reason}
		for _, d := range done {
			if d.Title == title || strings.HasPrefix(d.Title, title+":") {
				t = d
			}
		}
		out = append(out, t)
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

// loadAverage returns the first three fields of /proc/loadavg, or "unknown".
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// otherMachines counts the systemd-nspawn processes on the host: test
// machines sharing the CPUs.
func otherMachines() int {
	out, err := exec.Command("pgrep", "-x", "systemd-nspawn").Output()
	if err != nil {
		return 0
	}
	return len(strings.Fields(string(out)))
}

// summary is the text under the machine header: how the run went and what
// was installed, so that a reader can judge the figures.
func summary(o Options, e *env, loadStart, loadEnd string, took time.Duration) string {
	var b strings.Builder
	mode := "A full run"
	if o.Quick {
		mode = "A quick run (fewer samples, shorter loads: noisier figures)"
	}
	fmt.Fprintf(&b, "%s of `lodis-bench`, %s in all. Everything ran in one throwaway real systemd (systemd-nspawn, sharing the host's network); load came from package internal/load on the same host, to 127.0.0.1 only.\n\n", mode, took.Round(time.Second))
	fmt.Fprintf(&b, "**The machine was shared**: load average %s (1, 5, 15 min) at the start and %s at the end on %d cores; %d other test machine(s) of other engineers were running when this one booted. Absolute times are noisy; read the ratios, which compare runs made minutes apart (and, where stated, interleaved sample by sample).\n\n", loadStart, loadEnd, runtime.NumCPU(), e.others)
	fmt.Fprintf(&b, "lodis under test, as installed in the machine (`lodis version`): %s.\n\n", strings.TrimSuffix(strings.TrimSpace(e.version), ";"))
	have := func(ok bool, what string) string {
		if ok {
			return what + ": installed"
		}
		return what + ": not in this tree yet"
	}
	fmt.Fprintf(&b, "lodis parts found: %s; %s; %s. Stages that need a missing part say **Not run** with the reason; no figure is estimated or carried over.\n\n",
		have(e.has.supervisor, "supervisor (`lodis supervise`)"), have(e.has.upgrade, "upgrade roll-out (`lodis-upgrade.path`)"),
		have(e.has.nginxConfig, "`lodis nginx-config`"))
	b.WriteString("Each table: the goal, lodis's figure, whether it meets the goal, then each peer's figure and, where useful, the ratio lodis / peer.")
	return b.String()
}
