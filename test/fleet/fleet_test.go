package fleet

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/lodis/lodis/internal/buildinfo"
	"github.com/lodis/lodis/internal/load"
	"github.com/lodis/lodis/internal/release"
	"github.com/lodis/lodis/internal/rollout"
	"github.com/lodis/lodis/internal/testenv"
)

// loadRate is the request rate through the front during roll-outs: enough
// to keep a worker running on every host:port.
const loadRate = 150

// TestAnsibleLint: the role and the playbooks pass ansible-lint.
func TestAnsibleLint(t *testing.T) {
	defer tearDownOnPanic()
	if _, err := exec.LookPath("ansible-lint"); err != nil {
		t.Fatal("ansible-lint not found: install it with 'apt-get install -y ansible-lint' (or run test/deps.sh)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := exec.CommandContext(ctx, "ansible-lint", "--nocolor", "install.yml", "rollout.yml", "roles/lodis")
	c.Dir = filepath.Join(fl.repo, "packaging", "ansible")
	c.Env = append(os.Environ(), "HOME="+t.TempDir(), "ANSIBLE_LOCAL_TEMP="+t.TempDir())
	out, err := c.CombinedOutput()
	if err != nil {
		t.Fatalf("ansible-lint: %v\n%s", err, out)
	}
}

// TestInstall: install.yml put the package on every host, wrote app.conf,
// and every port of every host answers through the front.
func TestInstall(t *testing.T) {
	defer tearDownOnPanic()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, h := range fl.hosts {
		out, err := h.m.Output(ctx, "dpkg-query", "-W", "-f", "${Version} ${db:Status-Status}", "lodis")
		if err != nil || strings.TrimSpace(out) != installedVersion+" installed" {
			t.Errorf("%s: lodis package %q (%v), want %s installed", h.name, out, err, installedVersion)
		}
		conf, err := os.ReadFile(filepath.Join(h.m.Root, "etc/lodis/app.conf"))
		if err != nil {
			t.Errorf("%s: %v", h.name, err)
		}
		for k, v := range appConf {
			if !strings.Contains(string(conf), "\n"+k+"="+v+"\n") {
				t.Errorf("%s: /etc/lodis/app.conf lacks %s=%s:\n%s", h.name, k, v, conf)
			}
		}
		for _, u := range []string{"lodis-supervisor.service", "lodis-upgrade.path"} {
			if s := h.m.State(ctx, u); !strings.HasPrefix(s, "active/") {
				t.Errorf("%s: %s is %s, want active", h.name, u, s)
			}
		}
		for _, p := range ports {
			if s := h.m.State(ctx, fmt.Sprintf("lodis@%d.socket", p)); s != "active/listening" && s != "active/running" {
				t.Errorf("%s: lodis@%d.socket is %s, want listening", h.name, p, s)
			}
		}
		// app.conf is in force: daemon-reload ran, lodis-generator made the
		// workers' drop-in of it.
		if got := h.m.Prop(ctx, "lodis@8080.service", "TimeoutStopUSec"); got != appConf["STOP_TIMEOUT"] {
			t.Errorf("%s: lodis@8080.service has TimeoutStopSec=%s, want app.conf's STOP_TIMEOUT=%s", h.name, got, appConf["STOP_TIMEOUT"])
		}
		if !strings.Contains(h.m.Prop(ctx, "lodis-upgrade.service", "ExecStart"), "--canary-soak 2s") {
			t.Errorf("%s: lodis-upgrade.service does not run with --canary-soak 2s: %s", h.name, h.m.Prop(ctx, "lodis-upgrade.service", "ExecStart"))
		}
	}
	seen, err := fl.front.upstreamsSeen(ctx, fl.ctl, 3*len(fl.front.upstreams))
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range fl.front.upstreams {
		if seen[u] == 0 {
			t.Errorf("upstream %s never answered through the front (answers by upstream: %v)", u, seen)
		}
	}
}

// TestInstallIsIdempotent: running install.yml again changes nothing.
func TestInstallIsIdempotent(t *testing.T) {
	defer tearDownOnPanic()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	p, err := fl.ctl.run(ctx, "install.yml", map[string]any{
		"lodis_deb": fl.deb, "lodis_ports": ports, "lodis_app_conf": appConf, "lodis_canary_soak": "2s",
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("install.yml again: %s (first run %s)", p.took.Round(100*time.Millisecond), fl.installPlay.took.Round(100*time.Millisecond))
	if p.code != 0 {
		t.Fatalf("install.yml exited %d:\n%s", p.code, p.output)
	}
	for _, h := range fl.hosts {
		if r, ok := p.recap[h.name]; !ok || r.changed != 0 || r.failed != 0 {
			t.Errorf("%s: second run recap %+v (found: %v), want changed=0 failed=0\n%s", h.name, r, ok, p.output)
		}
	}
}

// TestBadVariables: install.yml refuses a bad app description — here a key
// lodis does not know, as the hosts' own `lodis config check` judges it
// (which refuses bad values the same way: see internal/appconf) — and a bad
// port, with one clear message, and changes nothing: app.conf stays as it
// was on every host.
func TestBadVariables(t *testing.T) {
	defer tearDownOnPanic()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	confs := map[string]string{}
	for _, h := range fl.hosts {
		b, err := os.ReadFile(filepath.Join(h.m.Root, "etc/lodis/app.conf"))
		if err != nil {
			t.Fatal(err)
		}
		confs[h.name] = string(b)
	}
	for _, tc := range []struct {
		name string
		vars map[string]any
		want string
	}{
		{"unknown app.conf key", map[string]any{"lodis_app_conf": map[string]string{"APP_ARGZ": "serve"}}, "unknown key APP_ARGZ"},
		{"bad port", map[string]any{"lodis_ports": []any{8080, 70000}}, "lodis_ports must list port numbers"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer tearDownOnPanic()
			vars := map[string]any{"lodis_deb": fl.deb, "lodis_ports": ports, "lodis_app_conf": appConf}
			for k, v := range tc.vars {
				vars[k] = v
			}
			p, err := fl.ctl.run(ctx, "install.yml", vars)
			if err != nil {
				t.Fatal(err)
			}
			if p.code == 0 || !strings.Contains(p.output, tc.want) {
				t.Errorf("install.yml exited %d, want a failure saying %q:\n%s", p.code, tc.want, p.output)
			}
			for _, h := range fl.hosts {
				if r := p.recap[h.name]; r.changed != 0 {
					t.Errorf("%s: the refused run changed %d things", h.name, r.changed)
				}
				if b, err := os.ReadFile(filepath.Join(h.m.Root, "etc/lodis/app.conf")); err != nil || string(b) != confs[h.name] {
					t.Errorf("%s: /etc/lodis/app.conf changed by the refused run (%v):\n%s", h.name, err, b)
				}
			}
		})
	}
}

// hostState is what one host says after a roll-out.
type hostState struct {
	active  string
	rollout *rollout.State
	workers map[string]string // running worker's port → sha256 of the release it runs
}

func (f *fleet) states(ctx context.Context, t *testing.T) []hostState {
	t.Helper()
	var out []hostState
	for _, h := range f.hosts {
		r, err := h.releases(ctx)
		if err != nil {
			t.Fatal(err)
		}
		s, err := h.status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		hs := hostState{active: r.Active, rollout: r.Rollout, workers: map[string]string{}}
		for _, in := range s.Instances {
			if in.Worker == "active/running" {
				hs.workers[in.Port] = in.SHA256
			}
		}
		out = append(out, hs)
	}
	return out
}

func took(st *rollout.State) time.Duration {
	if st == nil || st.Finished.IsZero() {
		return 0
	}
	return st.Finished.Sub(st.Started).Round(10 * time.Millisecond)
}

func logLoad(t *testing.T, what string, res *load.Result) {
	t.Helper()
	t.Logf("%s: %d requests through the front in %s at %d/s: %d ok, %d failed %v (statuses %v, retried %d), p50 %s p99 %s max %s",
		what, res.Total, res.Elapsed.Round(100*time.Millisecond), loadRate, res.OK, res.Failed, res.Failures, res.Statuses,
		res.Retried, res.P50, res.P99, res.Max)
	if res.Failed > 0 {
		for _, b := range res.Timeline {
			if b.Failed > 0 {
				t.Logf("  failures at +%s: %d of %d", b.Start, b.Failed, b.Sent)
			}
		}
	}
}

// rollOut runs rollout.yml for release under load through the front and
// returns the play and the load's result.
func rollOut(ctx context.Context, t *testing.T, release string) (*play, *load.Result) {
	t.Helper()
	l, err := startLoad(fl.ctl, loadRate)
	if err != nil {
		t.Fatal(err)
	}
	defer l.stop()
	time.Sleep(3 * time.Second) // every host:port has a running worker
	p, perr := fl.ctl.run(ctx, "rollout.yml", map[string]any{"lodis_release": release, "lodis_batch": 2, "lodis_rollout_timeout": "3m"})
	time.Sleep(2 * time.Second) // and keeps serving after the play
	res, lerr := l.stop()
	if perr != nil {
		t.Fatal(perr)
	}
	if lerr != nil {
		t.Fatal(lerr)
	}
	return p, res
}

// TestRollout rolls a good release across the fleet, then a bad one, under
// load through the front.
func TestRollout(t *testing.T) {
	defer tearDownOnPanic()
	t.Run("good release reaches every host", testGoodRelease)
	t.Run("bad release stops at the canary host", testBadRelease)
}

func testGoodRelease(t *testing.T) {
	defer tearDownOnPanic()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	p, res := rollOut(ctx, t, fl.good)
	logLoad(t, "good release", res)
	t.Logf("rollout.yml of %s: exit %d in %s", goodVersion, p.code, p.took.Round(100*time.Millisecond))
	if p.code != 0 {
		t.Fatalf("rollout.yml exited %d:\n%s", p.code, p.output)
	}
	states := fl.states(ctx, t)
	lines := p.dropLines()
	for i, h := range fl.hosts {
		s := states[i]
		t.Logf("%s: roll-out %s in %s (%s → %s), workers %s; the play: %s", h.name, phase(s.rollout), took(s.rollout),
			fromVersion(s.rollout), toVersion(s.rollout), short(s.workers), lines[h.name])
		if s.active != fl.goodSHA {
			t.Errorf("%s: active release %s, want %s (%s)", h.name, buildinfo.ShortSHA(s.active), buildinfo.ShortSHA(fl.goodSHA), goodVersion)
		}
		if s.rollout == nil || s.rollout.To != fl.goodSHA || s.rollout.Phase != rollout.PhaseDone {
			t.Errorf("%s: last roll-out %s to %s, want done to %s", h.name, phase(s.rollout), toVersion(s.rollout), goodVersion)
		}
		if len(s.workers) != len(ports) {
			t.Errorf("%s: %d workers run under load, want one on each of the %d ports: %s", h.name, len(s.workers), len(ports), short(s.workers))
		}
		for port, sha := range s.workers {
			if sha != fl.goodSHA {
				t.Errorf("%s: worker on port %s runs %s, want %s (%s)", h.name, port, buildinfo.ShortSHA(sha), buildinfo.ShortSHA(fl.goodSHA), goodVersion)
			}
		}
	}
	// One canary host first: the others started only after it was done.
	if c := states[0].rollout; c != nil {
		for i := 1; i < len(states); i++ {
			if o := states[i].rollout; o != nil && o.Started.Before(c.Finished) {
				t.Errorf("%s started its roll-out at %s, before the canary host %s had finished (%s)",
					fl.hosts[i].name, o.Started.Format(time.TimeOnly), fl.hosts[0].name, c.Finished.Format(time.TimeOnly))
			}
		}
	}
	if res.Failed != 0 {
		t.Errorf("%d of %d requests through the front failed during the roll-out: %v", res.Failed, res.Total, res.Failures)
	}
	if res.Total < loadRate*5 {
		t.Errorf("only %d requests were sent: the load did not run through the roll-out", res.Total)
	}
}

func testBadRelease(t *testing.T) {
	defer tearDownOnPanic()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	before := fl.states(ctx, t)
	p, res := rollOut(ctx, t, fl.bad)
	logLoad(t, "bad release", res)
	t.Logf("rollout.yml of %s: exit %d in %s", badVersion, p.code, p.took.Round(100*time.Millisecond))
	if p.code == 0 {
		t.Errorf("rollout.yml of a release that fails its health check exited 0:\n%s", p.output)
	}
	canary := fl.hosts[0]
	if r := p.recap[canary.name]; r.failed == 0 {
		t.Errorf("PLAY RECAP does not show the canary host %s failed: %+v\n%s", canary.name, r, p.output)
	}
	line := p.dropLines()[canary.name]
	t.Logf("%s in the play: %s", canary.name, line)
	if !strings.Contains(line, "rolled back") {
		t.Errorf("the play's output does not say the release was rolled back on %s:\n%s", canary.name, p.output)
	}
	for _, h := range fl.hosts[1:] {
		if strings.Contains(p.output, "["+h.name+"]") {
			t.Errorf("the play reached %s after the canary host failed:\n%s", h.name, p.output)
		}
	}
	after := fl.states(ctx, t)
	c := after[0]
	t.Logf("%s (canary host): roll-out %s in %s, reason %q, workers %s", canary.name, phase(c.rollout), took(c.rollout), reason(c.rollout), short(c.workers))
	if c.active != before[0].active {
		t.Errorf("%s: active release %s after the rollback, want %s as before", canary.name, buildinfo.ShortSHA(c.active), buildinfo.ShortSHA(before[0].active))
	}
	if c.rollout == nil || c.rollout.To != fl.badSHA || c.rollout.Phase != rollout.PhaseRolledBack {
		t.Errorf("%s: last roll-out %s to %s, want rolled-back from %s", canary.name, phase(c.rollout), toVersion(c.rollout), badVersion)
	}
	if len(c.workers) == 0 {
		t.Errorf("%s: no worker runs under load after the rollback", canary.name)
	}
	for port, sha := range c.workers {
		if sha != before[0].active {
			t.Errorf("%s: worker on port %s runs %s after the rollback, want %s as before", canary.name, port, buildinfo.ShortSHA(sha), buildinfo.ShortSHA(before[0].active))
		}
	}
	r, err := canary.releases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(r.Rejected, func(j release.Rejection) bool {
		return j.SHA256 == fl.badSHA && j.Stage == "rollout"
	}) {
		t.Errorf("%s: lodis releases shows no roll-out rejection of %s: %+v", canary.name, buildinfo.ShortSHA(fl.badSHA), r.Rejected)
	}
	for i, h := range fl.hosts[1:] {
		s, b := after[i+1], before[i+1]
		t.Logf("%s: active %s, last roll-out %s to %s", h.name, buildinfo.ShortSHA(s.active), phase(s.rollout), toVersion(s.rollout))
		if s.active != b.active {
			t.Errorf("%s: active release changed from %s to %s", h.name, buildinfo.ShortSHA(b.active), buildinfo.ShortSHA(s.active))
		}
		if s.rollout != nil && s.rollout.To == fl.badSHA {
			t.Errorf("%s: a roll-out of the bad release ran here (%s)", h.name, s.rollout.Phase)
		}
		hr, err := h.releases(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range hr.Releases {
			if e.SHA256 == fl.badSHA {
				t.Errorf("%s: the bad release is in its store (%s)", h.name, e.State)
			}
		}
		for _, j := range hr.Rejected {
			if j.SHA256 == fl.badSHA {
				t.Errorf("%s: the bad release was dropped here and rejected: %s", h.name, j.Reason)
			}
		}
		// Never received: no copy where the role or a drop puts it.
		for _, dir := range []string{"var/lib/lodis/incoming", "var/cache/lodis-ansible"} {
			des, err := os.ReadDir(filepath.Join(h.m.Root, dir))
			if err != nil {
				t.Fatal(err)
			}
			for _, de := range des {
				if !strings.HasSuffix(de.Name(), ".deb") {
					t.Errorf("%s: /%s holds %s after the play stopped at the canary host", h.name, dir, de.Name())
				}
			}
		}
	}
	if res.Failed != 0 {
		t.Errorf("%d of %d requests through the front failed during the bad roll-out: %v", res.Failed, res.Total, res.Failures)
	}
}

// short shows port → release as "8080:1a4e8c333fd2 …", by port.
func short(workers map[string]string) string {
	var out []string
	for port, sha := range workers {
		out = append(out, port+":"+buildinfo.ShortSHA(sha))
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

func phase(st *rollout.State) string {
	if st == nil {
		return "none"
	}
	return string(st.Phase)
}

func toVersion(st *rollout.State) string {
	if st == nil {
		return "-"
	}
	return st.ToVersion
}

func fromVersion(st *rollout.State) string {
	if st == nil {
		return "-"
	}
	return st.FromVersion
}

func reason(st *rollout.State) string {
	if st == nil {
		return ""
	}
	return st.Reason
}

// TestInstallGivenVersion: install.yml with lodis_version installs that
// version from the hosts' apt sources — here a repository of one package on
// each host, the only source they have — under load through the front,
// which loses nothing: the package's upgrade restarts the supervisor and
// the watcher, the workers keep serving.
func TestInstallGivenVersion(t *testing.T) {
	defer tearDownOnPanic()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	repo := filepath.Join(t.TempDir(), "apt")
	if err := os.MkdirAll(repo, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(fl.repoDeb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(repo, filepath.Base(fl.repoDeb)), b, 0o644); err != nil {
		t.Fatal(err)
	}
	c := exec.CommandContext(ctx, "dpkg-scanpackages", ".", "/dev/null")
	c.Dir = repo
	index, err := c.Output()
	if err != nil {
		t.Fatalf("dpkg-scanpackages: %v", err)
	}
	for _, h := range fl.hosts {
		for p, content := range map[string][]byte{
			"/srv/lodis-apt/" + filepath.Base(fl.repoDeb): b,
			"/srv/lodis-apt/Packages":                     index,
			"/etc/apt/sources.list":                       []byte("# the test repository only: see sources.list.d/lodis-test.list\n"),
			"/etc/apt/sources.list.d/lodis-test.list":     []byte("deb [trusted=yes] file:/srv/lodis-apt ./\n"),
		} {
			if err := h.m.WriteFile(p, content, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		others, _ := filepath.Glob(filepath.Join(h.m.Root, "etc/apt/sources.list.d/*"))
		for _, o := range others {
			if filepath.Base(o) != "lodis-test.list" {
				os.Remove(o)
			}
		}
	}
	l, err := startLoad(fl.ctl, loadRate)
	if err != nil {
		t.Fatal(err)
	}
	defer l.stop()
	time.Sleep(2 * time.Second)
	p, perr := fl.ctl.run(ctx, "install.yml", map[string]any{
		"lodis_version": repoVersion, "lodis_ports": ports, "lodis_app_conf": appConf, "lodis_canary_soak": "2s",
	})
	time.Sleep(2 * time.Second)
	res, lerr := l.stop()
	if perr != nil {
		t.Fatal(perr)
	}
	if lerr != nil {
		t.Fatal(lerr)
	}
	logLoad(t, "install.yml of version "+repoVersion, res)
	t.Logf("install.yml with lodis_version=%s: exit %d in %s", repoVersion, p.code, p.took.Round(100*time.Millisecond))
	if p.code != 0 {
		t.Fatalf("install.yml exited %d:\n%s", p.code, p.output)
	}
	for _, h := range fl.hosts {
		out, err := h.m.Output(ctx, "dpkg-query", "-W", "-f", "${Version} ${db:Status-Status}", "lodis")
		if err != nil || strings.TrimSpace(out) != repoVersion+" installed" {
			t.Errorf("%s: lodis package %q (%v), want %s installed", h.name, out, err, repoVersion)
		}
		if v, err := h.m.Output(ctx, "lodis", "version"); err != nil || !strings.Contains(v, repoVersion) {
			t.Errorf("%s: lodis version says %q (%v), want %s", h.name, v, err, repoVersion)
		}
		// The supervisor runs the installed lodis: the package's upgrade
		// restarted it onto the new one.
		if err := testenv.WaitFor(ctx, 20*time.Second, func() (bool, string) {
			s, err := h.status(ctx)
			return err == nil && s.Version == repoVersion, fmt.Sprintf("supervisor version %q (%v)", s.Version, err)
		}); err != nil {
			t.Errorf("%s: the supervisor after the package upgrade: %v", h.name, err)
		}
	}
	if res.Failed != 0 {
		t.Errorf("%d of %d requests through the front failed while the package was upgraded: %v", res.Failed, res.Total, res.Failures)
	}
}
