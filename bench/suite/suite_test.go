package suite

import (
	"bytes"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/lodis/lodis/bench/report"
	unitfiles "github.com/lodis/lodis/units"
)

// sourceUnit is the worker template as installed: lodis@.service followed by
// its worker drop-in.
func sourceUnit(t *testing.T) string {
	var text string
	for _, name := range []string{"lodis@.service", unitfiles.Worker} {
		b, err := unitfiles.Files.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		text += string(b) + "\n"
	}
	return text
}

func TestParseUnitSplitsTheWorkerUnit(t *testing.T) {
	text := sourceUnit(t)
	u, err := parseUnit(text)
	if err != nil {
		t.Fatal(err)
	}
	none := u.variant([]option{})
	all := u.variant(nil)
	for _, want := range []string{"ExecStart=@BINDIR@/lodis exec-app -- serve --port %i", "Type=notify", "StartLimitIntervalSec=0", "Requires=lodis@%i.socket", "Also=lodis@%i.socket"} {
		if !strings.Contains(none, want+"\n") || !strings.Contains(all, want+"\n") {
			t.Errorf("a variant lacks %q", want)
		}
	}
	for _, gone := range []string{"DynamicUser", "PrivateUsers", "SystemCallFilter", "ProtectSystem", "StartLimitIntervalSec=10s"} {
		if strings.Contains(none, gone) {
			t.Errorf("unhardened variant has %s:\n%s", gone, none)
		}
	}
	// Every [Service] line of the unit is in the fully hardened variant,
	// in its order for repeated keys (SystemCallFilter allow, then deny).
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, "SystemCallFilter=") || strings.HasPrefix(l, "DynamicUser=") || strings.HasPrefix(l, "User=") {
			if !strings.Contains(all, l+"\n") {
				t.Errorf("hardened variant lacks %q", l)
			}
		}
	}
	if i, j := strings.Index(all, "SystemCallFilter=~@clock"), strings.Index(all, "SystemCallFilter=~process_vm_readv"); i < 0 || j < i {
		t.Errorf("SystemCallFilter lines out of order:\n%s", all)
	}
	// Settings that only work together form one option.
	byName := map[string]option{}
	for _, o := range u.harden {
		byName[strings.SplitN(o.name, "=", 2)[0]] = o
	}
	if o := byName["DynamicUser"]; len(o.lines) != 2 || !strings.HasPrefix(o.lines[1], "User=") {
		t.Errorf("DynamicUser option = %+v, want it with User=", o)
	}
	if o := byName["SystemCallFilter"]; len(o.lines) != 3 {
		t.Errorf("SystemCallFilter option = %+v, want both filters and the error number", o)
	}
	if _, ok := byName["User"]; ok {
		t.Error("User= is an option of its own")
	}
	if len(u.harden) > portLast-portAblation+1 {
		t.Errorf("%d options, more than the %d ablation ports", len(u.harden), portLast-portAblation+1)
	}
}

func TestParseUnitRefusesOtherUnits(t *testing.T) {
	for _, text := range []string{
		"[Unit]\nDescription=x\n[Service]\nExecStart=/bin/true\n",      // no hardening
		"[Service]\nExecStart=/bin/true\nUser=nobody\n",                // User= without DynamicUser=
		"[Service]\nExecStart=/bin/true\nPrivateTmp\n",                 // not KEY=VALUE
		"[Foo]\nX=y\n[Service]\nExecStart=/bin/true\nPrivateTmp=yes\n", // outside the known sections
	} {
		if _, err := parseUnit(text); err == nil {
			t.Errorf("parseUnit accepted:\n%s", text)
		}
	}
}

func TestSamplesPercentiles(t *testing.T) {
	var s samples
	for i := 100; i >= 1; i-- {
		s.add(time.Duration(i)*time.Millisecond, i)
	}
	for _, c := range []struct{ p, want float64 }{{50, 50}, {90, 90}, {99, 99}, {100, 100}, {0, 1}} {
		if got := s.pct(c.p); got != c.want {
			t.Errorf("p%v = %v ms, want %v", c.p, got, c.want)
		}
	}
	if len(s.pids) != 100 {
		t.Errorf("%d distinct pids, want 100", len(s.pids))
	}
	if got := median([]float64{3, 1, 2, 10}); got != 2.5 {
		t.Errorf("median = %v, want 2.5", got)
	}
}

func TestProgressLines(t *testing.T) {
	var b bytes.Buffer
	p := newProgress(&b, true, []string{"cold", "footprint"})
	for _, name := range []string{"machine", "cold", "footprint"} {
		p.begin(name)
		p.end()
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 7 {
		t.Fatalf("%d lines, want a header and 2 per step:\n%s", len(lines), b.String())
	}
	re := regexp.MustCompile(`^\[(\d)/3\] (\w+) +(started|done in \S+) +elapsed \S+ +ETA (\S+)$`)
	for _, l := range lines[1:] {
		if !re.MatchString(l) {
			t.Errorf("progress line %q", l)
		}
	}
	if last := re.FindStringSubmatch(lines[6]); last == nil || last[4] != "0s" {
		t.Errorf("last line %q: want ETA 0s", lines[6])
	}
}

func TestSelectStages(t *testing.T) {
	if got, err := selectStages(nil); err != nil || strings.Join(got, ",") != "cold,throughput,footprint,upgrade,chaos,goals" {
		t.Errorf("selectStages(nil) = %v, %v", got, err)
	}
	if _, err := selectStages([]string{"cold", "warp"}); err == nil {
		t.Error("unknown stage accepted")
	}
	for _, s := range allStages {
		for i, tb := range skipped(s, "why") {
			if tb.Title != s.titles[i] || tb.NotRun != "why" || len(tb.Rows) != 0 {
				t.Errorf("skipped(%s)[%d] = %+v", s.name, i, tb)
			}
		}
	}
}

func TestNginxConfigs(t *testing.T) {
	front := nginxConf("front", nginxFront(18514, []int{18560, 18561}))
	for _, want := range []string{"server 127.0.0.1:18560 max_fails=0;", "listen 127.0.0.1:18514;",
		"proxy_next_upstream error timeout http_502 http_503;", "proxy_next_upstream_tries 2;", "keepalive 32;",
		"pid /run/lodis-bench/front/nginx.pid;"} {
		if !strings.Contains(front, want) {
			t.Errorf("front config lacks %q", want)
		}
	}
	hello := nginxHello([]int{18550, 18551})
	if strings.Count(hello, "listen 127.0.0.1:") != 2 || !strings.Contains(hello, `return 200 "hello\n";`) {
		t.Errorf("hello server block:\n%s", hello)
	}
}

// Every setting a group of table 1c names is in the installed unit: a
// renamed or dropped setting must not leave a group silently smaller.
func TestHardeningGroupsNameUnitSettings(t *testing.T) {
	u, err := parseUnit(sourceUnit(t))
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]bool{}
	for _, o := range u.harden {
		keys[o.key()] = true
	}
	for _, g := range hardeningGroups {
		for _, k := range g.keys {
			if !keys[k] {
				t.Errorf("group %q names %s, which the worker unit does not set", g.name, k)
			}
		}
	}
}

// A stage that fails part-way keeps the tables it measured; the others say
// it failed.
func TestCompleteKeepsMeasuredTables(t *testing.T) {
	s := stage{name: "x", titles: []string{"A", "B", "C"}}
	measured := report.Table{Title: "B: baselines", Rows: []report.Row{{Metric: "m"}}}
	got := complete(s, []report.Table{measured}, "failed: boom")
	if len(got) != 3 || got[0].NotRun != "failed: boom" || got[1].Title != "B: baselines" || got[1].NotRun != "" || got[2].NotRun != "failed: boom" {
		t.Errorf("complete = %+v", got)
	}
}

// The committed report (make bench) has a number in every cell and a
// reason for every table that was not run, and shows only plots that exist.
func TestCommittedReportVerifies(t *testing.T) {
	md, err := os.ReadFile("../results/" + ReportFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := report.Verify(md); err != nil {
		t.Error(err)
	}
	for _, m := range regexp.MustCompile(`!\[[^\]]+\]\(([^)]+)\)`).FindAllStringSubmatch(string(md), -1) {
		if _, err := os.Stat("../results/" + m[1]); err != nil {
			t.Errorf("plot %s: %v", m[1], err)
		}
	}
	for _, s := range allStages {
		for _, title := range s.titles {
			if !strings.Contains(string(md), "\n## "+title) {
				t.Errorf("no section %q", title)
			}
		}
	}
}
