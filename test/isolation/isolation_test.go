package isolation

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// sandbox is a worker sandbox under attack.
type sandbox struct {
	name     string
	a, b, py int // ports: two probe workers (a has a state directory) and the Python app
	traps    int // first of the three ports the traps listen on
}

// installed is the worker unit as installed: lodis@.service with its
// drop-in 10-worker.conf (units/lodis-worker.conf).
var installed = sandbox{name: "installed", a: 18601, b: 18602, py: 18603, traps: 18620}

// TestWorkerIsolation runs the probe as two workers of the real, installed
// lodis@PORT.service (only its ExecStart= replaced by a drop-in) and checks
// that every attack failed (or stayed inside the sandbox), that the workers
// still served (the app contract), and that a Python standard-library
// server works in the same sandbox.
func TestWorkerIsolation(t *testing.T) { installed.test(t) }

func (s sandbox) test(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	s.install(t, ctx)
	tr := listen(t, s.traps)

	pa, pb := hello(t, ctx, s.a), hello(t, ctx, s.b)
	q := url.Values{"tcp4": {tr.tcp4}, "tcp6": {tr.tcp6}, "udp4": {tr.udp4}, "abstract": {tr.abstract}}
	q.Set("peer", fmt.Sprint(pb))
	ra := report(t, ctx, s.a, q)
	// The second worker looks for what the first one created in places
	// that must be private, and for the key it added.
	var look []string
	for _, at := range ra.Attempts {
		for _, p := range at.Created {
			if !strings.HasPrefix(p, "tcp:") {
				look = append(look, p)
			}
		}
	}
	q.Set("peer", fmt.Sprint(pa))
	q.Set("look", strings.Join(look, ","))
	q.Set("key", "lodis-probe-"+fmt.Sprint(s.a))
	rb := report(t, ctx, s.b, q)

	visible := s.visibility(t, ctx, append(created(ra), created(rb)...))
	va := judgeAll(ra, visible, stateDirOf(ra))
	vb := judgeAll(rb, visible, stateDirOf(rb))
	logTable(t, s.name, ra, rb, va, vb)

	for _, r := range []struct {
		rep Report
		v   map[string]Verdict
	}{{ra, va}, {rb, vb}} {
		for _, at := range r.rep.Attempts {
			if v := r.v[at.Name]; !v.Held {
				t.Errorf("worker on port %s: %s [%s]: %s", r.rep.Port, at.Name, at.Group, v.Why)
			}
		}
	}
	if got := tr.arrived(); len(got) > 0 {
		t.Errorf("the traps on the host were reached by a worker: %s", strings.Join(got, "; "))
	}
	s.checkContract(t, ctx, ra, rb)
	s.checkPython(t, ctx)
}

// install writes the sandbox's units and drop-ins, starts its sockets, and
// undoes all of it at cleanup.
func (s sandbox) install(t *testing.T, ctx context.Context) {
	files := map[string]string{
		dropIn(s.a): fmt.Sprintf("[Service]\nExecStart=\nExecStart=%s\nStateDirectory=lodis-app\n", probe),
		dropIn(s.b): fmt.Sprintf("[Service]\nExecStart=\nExecStart=%s\n", probe),
		// The Python app sends no WATCHDOG=1.
		dropIn(s.py): fmt.Sprintf("[Service]\nExecStart=\nExecStart=%s\nWatchdogSec=0\n", pyapp),
	}
	for path, body := range files {
		if err := m.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var sockets []string
	for _, p := range []int{s.a, s.b, s.py} {
		sockets = append(sockets, fmt.Sprintf("lodis@%d.socket", p))
	}
	if _, err := m.Systemctl(ctx, "daemon-reload"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		var units []string
		for _, p := range []int{s.a, s.b, s.py} {
			units = append(units, fmt.Sprintf("lodis@%d.socket", p), fmt.Sprintf("lodis@%d.service", p))
		}
		m.Systemctl(ctx, append([]string{"stop"}, units...)...)
		for path := range files {
			os.Remove(filepath.Join(m.Root, path))
		}
		m.Systemctl(ctx, "daemon-reload")
		m.Systemctl(ctx, append([]string{"reset-failed"}, units...)...)
	})
	if _, err := m.Systemctl(ctx, append([]string{"start"}, sockets...)...); err != nil {
		t.Fatal(err)
	}
}

func dropIn(port int) string {
	return fmt.Sprintf("/etc/systemd/system/lodis@%d.service.d/isolation.conf", port)
}

// client waits long enough for a report (the probe's walk of the whole
// filesystem is bounded at 90 s).
var client = &http.Client{Timeout: 4 * time.Minute, Transport: &http.Transport{DisableKeepAlives: true}}

func get(ctx context.Context, port int, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d%s", port, path), nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s on %d: %s: %s", path, port, resp.Status, b)
	}
	return json.Unmarshal(b, v)
}

// hello starts the worker of port (the first connection activates it) and
// returns its PID.
func hello(t *testing.T, ctx context.Context, port int) int {
	t.Helper()
	var h struct {
		PID int `json:"pid"`
	}
	if err := get(ctx, port, "/hello", &h); err != nil {
		t.Fatalf("the probe on port %d does not answer: %v\n%s", port, err, journal(ctx, port))
	}
	return h.PID
}

func report(t *testing.T, ctx context.Context, port int, q url.Values) Report {
	t.Helper()
	var r Report
	if err := get(ctx, port, "/report?"+q.Encode(), &r); err != nil {
		t.Fatalf("no report from the probe on port %d: %v\n%s", port, err, journal(ctx, port))
	}
	if len(r.Attempts) == 0 {
		t.Fatalf("the probe on port %d reported no attempts", port)
	}
	return r
}

func journal(ctx context.Context, port int) string {
	out, _ := m.Output(ctx, "journalctl", "-q", "--no-pager", "-o", "cat", "-n", "20", "-u", fmt.Sprintf("lodis@%d.service", port))
	return out
}

func created(r Report) []string {
	var ps []string
	for _, a := range r.Attempts {
		ps = append(ps, a.Created...)
	}
	return ps
}

// safePath is what a file the probe created may look like: the probe names
// them itself, but the test quotes them into a shell command.
var safePath = regexp.MustCompile(`^/[A-Za-z0-9/._@-]+$`)

// visibility looks for every created thing outside the sandbox: files on
// the machine's own filesystem (as root, outside any worker's namespace),
// listening ports from the host. It returns the lookup Judge wants.
func (s sandbox) visibility(t *testing.T, ctx context.Context, paths []string) func(string) string {
	seen := map[string]string{}
	var script strings.Builder
	for _, p := range paths {
		switch {
		case strings.HasPrefix(p, "tcp:"):
			c, err := net.DialTimeout("tcp", strings.TrimPrefix(p, "tcp:"), 2*time.Second)
			if err == nil {
				c.Close()
				seen[p] = "the host, which connected to it"
			}
		case !safePath.MatchString(p):
			seen[p] = "(an odd name: taken as visible)"
		default:
			fmt.Fprintf(&script, "[ ! -e '%s' ] || echo '%s'\n", p, p)
		}
	}
	if script.Len() > 0 {
		out, err := m.Sh(ctx, script.String())
		if err != nil {
			t.Fatalf("look for the probes' files: %v", err)
		}
		for _, p := range strings.Fields(out) {
			seen[p] = "root on the host"
		}
	}
	return func(p string) string { return seen[p] }
}

// stateDirOf returns the paths a worker may write by contract: its state
// directory, which DynamicUser= keeps under /var/lib/private and links.
func stateDirOf(r Report) func(string) bool {
	d := r.Contract.StateDir
	if d == "" {
		return func(string) bool { return false }
	}
	private := "/var/lib/private/" + filepath.Base(d)
	return func(p string) bool {
		return strings.HasPrefix(p, d+"/") || strings.HasPrefix(p, private+"/")
	}
}

func judgeAll(r Report, visible func(string) string, allowed func(string) bool) map[string]Verdict {
	v := map[string]Verdict{}
	for _, a := range r.Attempts {
		v[a.Name] = Judge(a, visible, allowed)
	}
	return v
}

// logTable prints every attempt with both workers' verdicts.
func logTable(t *testing.T, name string, ra, rb Report, va, vb map[string]Verdict) {
	var b strings.Builder
	fmt.Fprintf(&b, "sandbox %q: worker %s (pid %d, uid %d, %.1f s) and worker %s (pid %d, uid %d, %.1f s)\n",
		name, ra.Port, ra.PID, ra.UID, ra.Seconds, rb.Port, rb.PID, rb.UID, rb.Seconds)
	fmt.Fprintf(&b, "%-10s %-78s | %-34s | %s\n", "group", "attempt", "worker "+ra.Port, "worker "+rb.Port)
	groups := map[string]string{}
	var names []string
	for _, r := range []Report{ra, rb} {
		for _, a := range r.Attempts {
			if _, ok := groups[a.Name]; !ok {
				names = append(names, a.Name)
				groups[a.Name] = a.Group
			}
		}
	}
	cell := func(v map[string]Verdict, n string) string {
		x, ok := v[n]
		if !ok {
			return "-"
		}
		w := x.Why
		if !x.Held {
			w = "FAIL " + w
		}
		return clip(w, 80)
	}
	for _, n := range names {
		fmt.Fprintf(&b, "%-10s %-78s | %-34s | %s\n", groups[n], clip(n, 78), cell(va, n), cell(vb, n))
	}
	t.Log("\n" + b.String())
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n-1] + "…"
	}
	return s
}

// checkContract: both workers got a TCP listener as fd 3, told systemd they
// were ready, read their own binary, logged to the journal, and the first
// one could write its state directory.
func (s sandbox) checkContract(t *testing.T, ctx context.Context, reps ...Report) {
	for _, r := range reps {
		c := r.Contract
		if !c.ListenOK || (c.ListenFamily != "AF_INET" && c.ListenFamily != "AF_INET6") {
			t.Errorf("worker %s: fd 3 is %s, listening %v: want an AF_INET/AF_INET6 TCP listener", r.Port, c.ListenFamily, c.ListenOK)
		}
		if !c.Notified {
			t.Errorf("worker %s: sd_notify READY=1 not sent: %s", r.Port, c.NotifyError)
		}
		if c.ExeSHA256 != probeSHA {
			t.Errorf("worker %s: sha256 of /proc/self/exe is %q, want the probe's %s", r.Port, c.ExeSHA256, probeSHA)
		}
		if j := journal(ctx, atoi(r.Port)); !strings.Contains(j, c.Stdout) {
			t.Errorf("worker %s: the journal lacks its stdout line %q:\n%s", r.Port, c.Stdout, j)
		}
	}
	if a := reps[0]; a.Contract.StateDir == "" || !a.Contract.StateDirOK {
		t.Errorf("worker %s: state directory %q not writable", a.Port, a.Contract.StateDir)
	}
	if b := reps[1]; b.Contract.StateDir != "" {
		t.Errorf("worker %s has a state directory (%s) it was not given", b.Port, b.Contract.StateDir)
	}
}

func atoi(s string) int {
	var n int
	fmt.Sscan(s, &n)
	return n
}

// checkPython: a standard-library Python server serves in the same sandbox.
func (s sandbox) checkPython(t *testing.T, ctx context.Context) {
	var r struct {
		PID         int    `json:"pid"`
		Family      string `json:"family"`
		NotifyError string `json:"notify_error"`
		ExeSHA256   string `json:"exe_sha256"`
	}
	if err := get(ctx, s.py, "/", &r); err != nil {
		t.Errorf("the Python app does not serve in this sandbox: %v\n%s", err, journal(ctx, s.py))
		return
	}
	want, err := m.Sh(ctx, `sha256sum "$(readlink -f /usr/bin/python3)" | cut -c1-64`)
	if err != nil {
		t.Fatal(err)
	}
	if r.NotifyError != "" || r.ExeSHA256 != strings.TrimSpace(want) || !strings.HasPrefix(r.Family, "AF_INET") {
		t.Errorf("the Python app: notify error %q, exe sha256 %s (python3's: %s), listener %s", r.NotifyError, r.ExeSHA256, strings.TrimSpace(want), r.Family)
	}
	if st := m.State(ctx, fmt.Sprintf("lodis@%d.service", s.py)); st != "active/running" {
		t.Errorf("the Python app's unit is %s, want active/running (ready)", st)
	}
	t.Logf("the Python app (pid %d, %s) served and was ready", r.PID, r.Family)
}
