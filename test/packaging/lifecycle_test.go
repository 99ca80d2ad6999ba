package packaging

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/lodis/lodis/internal/health"
	"github.com/lodis/lodis/internal/testenv"
)

const (
	port1 = "18400"
	port2 = "18401"
)

// enabledOnInstall lists the units the package enables and starts by itself:
// the supervisor and the upgrade watcher, when units/ has them.
func enabledOnInstall(t *testing.T) []string {
	var out []string
	for _, u := range []string{"lodis-supervisor.service", "lodis-upgrade.path"} {
		if _, err := os.Stat(filepath.Join(repo, "units", u)); err == nil {
			out = append(out, u)
		}
	}
	return out
}

// apt runs apt-get inside the machine with a package file copied in.
func apt(ctx context.Context, t *testing.T, args ...string) string {
	t.Helper()
	out, err := mach.Output(ctx, append([]string{"env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-y", "-q"}, args...)...)
	if err != nil {
		t.Fatalf("apt-get %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// dpkg runs dpkg inside the machine.
func dpkg(ctx context.Context, t *testing.T, args ...string) string {
	t.Helper()
	out, err := mach.Output(ctx, append([]string{"env", "DEBIAN_FRONTEND=noninteractive", "dpkg"}, args...)...)
	if err != nil {
		t.Fatalf("dpkg %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// putDeb copies a package into the machine and returns its path there.
func putDeb(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	in := "/opt/lodis-test/" + filepath.Base(p)
	if err := mach.WriteFile(in, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return in
}

func sh(ctx context.Context, t *testing.T, script string) string {
	t.Helper()
	out, err := mach.Sh(ctx, script)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// getHealth is testenv.Health for a port written as a string.
func getHealth(ctx context.Context, port string) (health.Report, error) {
	p, err := strconv.Atoi(port)
	if err != nil {
		return health.Report{}, fmt.Errorf("port %q: %w", port, err)
	}
	return testenv.Health(ctx, p)
}

// refused reports whether a connection to the port is refused.
func refused(port string) error {
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+port, 2*time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("port %s accepts connections", port)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("port %s: want connection refused, got %w", port, err)
	}
	return nil
}

// activeLodisUnits lists the lodis units that are not inactive.
func activeLodisUnits(ctx context.Context, t *testing.T) []string {
	t.Helper()
	out := sh(ctx, t, "systemctl list-units --all --plain --no-legend 'lodis*' | awk '$3 != \"inactive\" { print $1, $3, $4 }'")
	if out == "" {
		return nil
	}
	return strings.Split(out, "\n")
}

// load sends GET / to a port every 5 ms, one connection per request, until
// stop is called; it returns how many were answered 200 and the failures.
type load struct {
	ok     atomic.Int64
	mu     sync.Mutex
	failed []string
	stop   chan struct{}
	done   chan struct{}
}

func startLoad(port string) *load {
	l := &load{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		deadline := time.After(2 * time.Minute) // bounded whatever happens
		for {
			select {
			case <-l.stop:
				return
			case <-deadline:
				return
			case <-time.After(5 * time.Millisecond):
			}
			resp, err := testenv.Client.Get("http://127.0.0.1:" + port + "/")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					err = fmt.Errorf("status %s", resp.Status)
				}
			}
			if err != nil {
				l.mu.Lock()
				l.failed = append(l.failed, err.Error())
				l.mu.Unlock()
				continue
			}
			l.ok.Add(1)
		}
	}()
	return l
}

func (l *load) Stop() (ok int64, failed []string) {
	close(l.stop)
	<-l.done
	return l.ok.Load(), l.failed
}

// TestDebLifecycle installs the package with apt-get in a real systemd,
// enables a port, installs it again over itself and upgrades it (dpkg -i)
// under load, drops a new binary, removes the package, installs it again and
// purges it; each step checks what an operator would see.
func TestDebLifecycle(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	// This machine's root carries a container image's policy-rc.d, which
	// forbids every service action; a real host has none.
	sh(ctx, t, "rm -f /usr/sbin/policy-rc.d")
	// man-db's trigger re-indexes every manual page on each install, for
	// seconds; nothing here reads them.
	sh(ctx, t, "echo 'man-db man-db/auto-update boolean false' | debconf-set-selections")
	pkg := putDeb(t, deb)

	step := func(name string, f func(t *testing.T)) {
		if !t.Run(name, f) {
			t.FailNow()
		}
	}

	step("install", func(t *testing.T) {
		apt(ctx, t, "install", "--no-install-recommends", pkg)
		if got := sh(ctx, t, "dpkg-query -W -f '${Status} ${Version}' lodis"); got != "install ok installed "+version {
			t.Errorf("dpkg says %q, want installed %s", got, version)
		}
		if got := sh(ctx, t, "lodis version | head -n1"); got != "lodis "+version {
			t.Errorf("lodis version says %q, want %q", got, "lodis "+version)
		}
		if got := sh(ctx, t, "getent passwd lodis | cut -d: -f6,7; getent group lodis | cut -d: -f1"); got != "/var/lib/lodis:/usr/sbin/nologin\nlodis" {
			t.Errorf("user and group lodis: got %q", got)
		}
		checkTmpfiles(ctx, t)
		if got := sh(ctx, t, "readlink /var/lib/lodis/current"); got != "/usr/bin/lodis" {
			t.Errorf("/var/lib/lodis/current -> %q, want /usr/bin/lodis", got)
		}
		want := enabledOnInstall(t)
		enabled := strings.Fields(sh(ctx, t, "systemctl list-unit-files --state=enabled --plain --no-legend 'lodis*' | awk '{ print $1 }'"))
		sort.Strings(enabled)
		if strings.Join(enabled, " ") != strings.Join(want, " ") {
			t.Errorf("enabled lodis units after install: %q, want %q (no port: ports are the operator's choice)", enabled, want)
		}
		var active []string
		for _, u := range activeLodisUnits(ctx, t) {
			active = append(active, strings.Fields(u)[0])
		}
		sort.Strings(active)
		if strings.Join(active, " ") != strings.Join(want, " ") {
			t.Errorf("active lodis units after install: %q, want %q", active, want)
		}
		if err := refused(port1); err != nil {
			t.Error(err)
		}
	})

	step("enable a port", func(t *testing.T) {
		sh(ctx, t, "systemctl enable --now lodis@"+port1+".socket")
		if s := mach.State(ctx, "lodis@"+port1+".socket"); s != "active/listening" {
			t.Fatalf("lodis@%s.socket is %s, want active/listening", port1, s)
		}
		if s := mach.State(ctx, "lodis@"+port1+".service"); s != "inactive/dead" {
			t.Errorf("a worker runs before the first request: lodis@%s.service is %s", port1, s)
		}
		h, err := getHealth(ctx, port1)
		if err != nil {
			t.Fatal(err)
		}
		if h.Version != version || h.Port != port1 {
			t.Errorf("health: version %q port %q, want %q %q", h.Version, h.Port, version, port1)
		}
		if s := mach.State(ctx, "lodis@"+port1+".service"); s != "active/running" {
			t.Errorf("after a request lodis@%s.service is %s, want active/running", port1, s)
		}
	})

	step("install again over itself keeps serving", func(t *testing.T) {
		before, err := getHealth(ctx, port1)
		if err != nil {
			t.Fatal(err)
		}
		l := startLoad(port1)
		dpkg(ctx, t, "-i", pkg)
		time.Sleep(300 * time.Millisecond)
		ok, failed := l.Stop()
		if len(failed) > 0 || ok < 20 {
			t.Errorf("during the reinstall: %d answered, %d failed (first: %v)", ok, len(failed), first(failed))
		}
		if s := mach.State(ctx, "lodis@"+port1+".socket"); !serving(s) {
			t.Errorf("after reinstall lodis@%s.socket is %s", port1, s)
		}
		after, err := getHealth(ctx, port1)
		if err != nil {
			t.Fatal(err)
		}
		if after.PID != before.PID {
			t.Errorf("reinstall restarted the worker (pid %d -> %d): running ports should be left alone", before.PID, after.PID)
		}
	})

	newVersion := version + "+t1"
	step("upgrade keeps serving", func(t *testing.T) {
		p, err := makeDeb(ctx, t.TempDir(), "VERSION="+newVersion)
		if err != nil {
			t.Fatal(err)
		}
		pkg2 := putDeb(t, p)
		before, err := getHealth(ctx, port1)
		if err != nil {
			t.Fatal(err)
		}
		l := startLoad(port1)
		dpkg(ctx, t, "-i", pkg2)
		time.Sleep(300 * time.Millisecond)
		ok, failed := l.Stop()
		if len(failed) > 0 || ok < 20 {
			t.Errorf("during the upgrade: %d answered, %d failed (first: %v)", ok, len(failed), first(failed))
		}
		if got := sh(ctx, t, "dpkg-query -W -f '${Version}' lodis"); got != newVersion {
			t.Fatalf("after the upgrade dpkg says version %q, want %q", got, newVersion)
		}
		h, err := getHealth(ctx, port1)
		if err != nil {
			t.Fatal(err)
		}
		if h.PID != before.PID || h.Version != version {
			t.Errorf("running worker: pid %d version %q, want it untouched (pid %d version %q)", h.PID, h.Version, before.PID, version)
		}
		// The package's supervisor was restarted onto the new lodis.
		if slices.Contains(enabledOnInstall(t), "lodis-supervisor.service") {
			if err := testenv.WaitFor(ctx, 20*time.Second, func() (bool, string) {
				v, err := supervisorVersion(ctx)
				return err == nil && v == newVersion, fmt.Sprintf("supervisor version %q, %v", v, err)
			}); err != nil {
				t.Errorf("the upgrade did not restart the supervisor onto the new lodis: %v", err)
			}
		}
		// The next worker runs the new binary (no app was dropped: the
		// installed lodis is the app).
		sh(ctx, t, "systemctl restart lodis@"+port1+".service")
		if err := testenv.WaitFor(ctx, 10*time.Second, func() (bool, string) {
			h, err := getHealth(ctx, port1)
			return err == nil && h.Version == newVersion, fmt.Sprintf("health %+v, %v", h, err)
		}); err != nil {
			t.Errorf("after restarting the worker: %v", err)
		}
	})

	dropVersion := newVersion + "+drop"
	step("dropping a new binary upgrades", func(t *testing.T) {
		bin := filepath.Join(t.TempDir(), "lodis")
		c := exec.CommandContext(ctx, "make", "-s", "-C", repo, "build", "BIN="+bin, "VERSION="+dropVersion)
		c.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("make build: %v: %s", err, out)
		}
		b, err := os.ReadFile(bin)
		if err != nil {
			t.Fatal(err)
		}
		l := startLoad(port1)
		// As README.Debian says: write beside the drop, then rename into place.
		tmp := "/var/lib/lodis/incoming/.lodis.tmp"
		if err := mach.WriteFile(tmp, b, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(mach.Root, tmp), filepath.Join(mach.Root, "/var/lib/lodis/incoming/lodis")); err != nil {
			t.Fatal(err)
		}
		err = testenv.WaitFor(ctx, 90*time.Second, func() (bool, string) {
			h, err := getHealth(ctx, port1)
			return err == nil && h.Version == dropVersion, fmt.Sprintf("health %+v, %v", h, err)
		})
		if err == nil {
			// The run ends after the canary has been watched.
			err = testenv.WaitFor(ctx, 60*time.Second, func() (bool, string) {
				s := mach.Prop(ctx, "lodis-upgrade.service", "ActiveState") + "/" + mach.Prop(ctx, "lodis-upgrade.service", "Result")
				return s == "inactive/success", "lodis-upgrade.service " + s
			})
		}
		ok, failed := l.Stop()
		if err != nil {
			t.Fatalf("the drop was not rolled out: %v\n%s", err, sh(ctx, t, "journalctl -u lodis-upgrade --no-pager | tail -n 20"))
		}
		if len(failed) > 0 || ok < 20 {
			t.Errorf("during the drop's roll-out: %d answered, %d failed (first: %v)", ok, len(failed), first(failed))
		}
		if cur := sh(ctx, t, "readlink /var/lib/lodis/current"); !strings.HasPrefix(cur, "/var/lib/lodis/releases/") && !strings.HasPrefix(cur, "releases/") {
			t.Errorf("/var/lib/lodis/current -> %q, want a release under /var/lib/lodis/releases", cur)
		}
		// Root's lodis upgrade rolled it out (the store as tmpfiles.d makes
		// it: root's); the packaged supervisor (user lodis, polkit) held its
		// remedies and kept running the package's lodis: a drop never
		// becomes the supervisor.
		if n := sh(ctx, t, "journalctl -u lodis-upgrade --no-pager -o cat | grep -c 'event=done' || true"); n != "1" {
			t.Errorf("lodis upgrade did not roll the drop out (%s done events):\n%s", n, sh(ctx, t, "journalctl -u lodis-upgrade --no-pager -o cat | tail -n 20"))
		}
		if slices.Contains(enabledOnInstall(t), "lodis-supervisor.service") {
			if v, err := supervisorVersion(ctx); err != nil || v != newVersion {
				t.Errorf("the supervisor runs version %q (%v), want the package's %s", v, err, newVersion)
			}
			if n := sh(ctx, t, "journalctl -u lodis-supervisor --no-pager -o cat | grep -c 'worker remedies held' || true"); n == "0" {
				t.Errorf("the supervisor did not hold its remedies during the roll-out")
			}
		}
	})

	step("remove stops every lodis unit", func(t *testing.T) {
		sh(ctx, t, "systemctl enable --now lodis@"+port2+".socket")
		if _, err := getHealth(ctx, port2); err != nil {
			t.Fatal(err)
		}
		apt(ctx, t, "remove", "lodis")
		if active := activeLodisUnits(ctx, t); len(active) > 0 {
			t.Errorf("after apt-get remove these lodis units are not inactive: %q\n%s", active,
				sh(ctx, t, "journalctl --no-pager -n 40 -u 'lodis*'"))
		}
		for _, p := range []string{port1, port2} {
			if err := refused(p); err != nil {
				t.Error(err)
			}
		}
		if got := sh(ctx, t, "dpkg-query -W -f '${Status}' lodis; echo; test -e /usr/bin/lodis && echo binary left; test -d /var/lib/lodis/releases && echo state kept"); got != "deinstall ok config-files\nstate kept" {
			t.Errorf("after remove: %q, want the package in config-files state, no binary, /var/lib/lodis kept", got)
		}
	})

	step("installing again brings the enabled ports back", func(t *testing.T) {
		apt(ctx, t, "install", "/opt/lodis-test/"+fmt.Sprintf("lodis_%s_%s.deb", newVersion, debArch(t)))
		for _, p := range []string{port1, port2} {
			if s := mach.State(ctx, "lodis@"+p+".socket"); !serving(s) {
				t.Errorf("lodis@%s.socket is %s, want active", p, s)
			}
			// The dropped release stays current: the package does not switch it.
			if h, err := getHealth(ctx, p); err != nil || h.Version != dropVersion {
				t.Errorf("port %s: %+v, %v; want version %s", p, h, err, dropVersion)
			}
		}
		for _, u := range enabledOnInstall(t) {
			if s := mach.State(ctx, u); !strings.HasPrefix(s, "active/") {
				t.Errorf("%s is %s after installing again, want active", u, s)
			}
		}
	})

	step("purge leaves nothing", func(t *testing.T) {
		apt(ctx, t, "purge", "lodis")
		if active := activeLodisUnits(ctx, t); len(active) > 0 {
			t.Errorf("after apt-get purge these lodis units are not inactive: %q", active)
		}
		for _, p := range []string{port1, port2} {
			if err := refused(p); err != nil {
				t.Error(err)
			}
		}
		left := sh(ctx, t, `dpkg-query -W -f '${Status}' lodis 2>/dev/null || true; echo
test -e /var/lib/lodis && echo /var/lib/lodis exists
getent passwd lodis && echo user lodis exists
getent group lodis && echo group lodis exists
find /etc/systemd/system -name '*lodis*'`)
		if left != "" && left != "unknown ok not-installed" {
			t.Errorf("after purge: %q", left)
		}
	})
}

// serving reports whether a socket unit's state means its port is open:
// listening, or running while its worker is up.
func serving(state string) bool {
	return state == "active/listening" || state == "active/running"
}

func first(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return s[0]
}

func debArch(t *testing.T) string {
	a, err := debField(deb, "Architecture")
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// checkTmpfiles compares every directory units/lodis.tmpfiles declares with
// what the machine has.
func checkTmpfiles(ctx context.Context, t *testing.T) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repo, "units", "lodis.tmpfiles"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 5 || f[0] != "d" {
			continue
		}
		n++
		want := fmt.Sprintf("%s %s %s", strings.TrimLeft(f[2], "0"), f[3], f[4])
		if got := sh(ctx, t, "stat -c '%a %U %G' "+f[1]); got != want {
			t.Errorf("%s: mode/owner/group %q, want %q", f[1], got, want)
		}
	}
	if n < 4 {
		t.Errorf("units/lodis.tmpfiles declares %d directories, expected /var/lib/lodis and its releases, incoming, rejected", n)
	}
}

// supervisorVersion is the version the running supervisor reports.
func supervisorVersion(ctx context.Context) (string, error) {
	out, err := mach.Output(ctx, "lodis", "status", "--json")
	if err != nil {
		return "", err
	}
	var s struct{ Version string }
	err = json.Unmarshal([]byte(out), &s)
	return s.Version, err
}
