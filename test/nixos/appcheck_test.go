package nixos

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/lodis/lodis/internal/appconf"
	"github.com/lodis/lodis/units"
)

// What the module writes for the app is checked with lodis itself: the
// binary built from this tree reads /etc/lodis/app.conf as NixOS writes it
// (lodis config check), runs as the generator NixOS links, and the worker
// units are what systemd would put together from the package's files and
// the generator's drop-ins.

var (
	lodisOnce sync.Once
	lodisErr  error
)

// lodisBinary builds bin/lodis (make bin/lodis) once and returns its path.
func lodisBinary(t *testing.T) string {
	t.Helper()
	lodisOnce.Do(func() {
		c := exec.Command("make", "-s", "bin/lodis")
		c.Dir = repo
		if out, err := c.CombinedOutput(); err != nil {
			lodisErr = fmt.Errorf("make bin/lodis: %w: %s", err, out)
		}
	})
	if lodisErr != nil {
		t.Fatal(lodisErr)
	}
	return filepath.Join(repo, "bin", "lodis")
}

// checkAppConf writes text as app.conf, expects `lodis config check -f` to
// call it good, and returns what lodis reads from it.
func checkAppConf(t *testing.T, text string) appconf.Config {
	t.Helper()
	file := filepath.Join(t.TempDir(), "app.conf")
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	c := exec.Command(lodisBinary(t), "config", "check", "-f", file)
	c.Stderr = &stderr
	if err := c.Run(); err != nil || !strings.Contains(stderr.String(), "is good") {
		t.Fatalf("lodis config check -f on the module's app.conf: %v: %s\n%s", err, stderr.String(), text)
	}
	cfg, err := appconf.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// runGenerator runs generator (lodis-generator, through the links NixOS
// makes) as systemd does, with appConf as /etc/lodis/app.conf, and returns
// its output directory. It runs in a mount namespace of its own where /etc
// and /var/lib are empty tmpfs: the host's are neither read nor written.
func runGenerator(t *testing.T, generator, appConf string) string {
	t.Helper()
	out := t.TempDir()
	script := `set -e
mount -t tmpfs tmpfs /etc
mkdir /etc/lodis
cat > /etc/lodis/app.conf
mount -t tmpfs tmpfs /var/lib
exec "$0" "$1" "$1" "$1"`
	var stderr bytes.Buffer
	c := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", script, generator, out)
	c.Stdin = strings.NewReader(appConf)
	c.Stderr = &stderr
	if err := c.Run(); err != nil || stderr.Len() > 0 {
		t.Fatalf("%s: %v: %s", generator, err, stderr.String())
	}
	return out
}

// workerUnit is a worker template as systemd assembles it on a host with
// pkg installed: units/TEMPLATE, the package's drop-in 10-worker.conf, then
// the generator's 50-app.conf from genDir, for one port.
func workerUnit(t *testing.T, pkg, genDir, template string, port string) unit {
	t.Helper()
	u := mustUnit(t, template)
	for _, f := range []string{
		filepath.Join(pkg, "lib", "systemd", "system", template+".d", units.WorkerDropIn),
		filepath.Join(genDir, template+".d", appconf.DropInName),
	} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for section, kv := range dropinLines(t, f, string(b)) {
			u = u.withDropin(section, kv)
		}
	}
	return u.instance(port)
}

// execStart is a unit's one ExecStart= split into words as systemd splits it.
func execStart(t *testing.T, u unit) []string {
	t.Helper()
	v := u["Service"]["ExecStart"]
	if len(v) != 1 {
		t.Fatalf("ExecStart= %q, want one command", v)
	}
	words, err := appconf.SplitArgs(v[0])
	if err != nil {
		t.Fatalf("ExecStart=%s: %v", v[0], err)
	}
	return words
}

// workerCommand is units/lodis-worker.conf's ExecStart= as installed in pkg
// (@BINDIR@ its bin/), in words: the launcher up to "--", and the default
// app's arguments after it.
func workerCommand(t *testing.T, pkg string) (launcher, args []string) {
	t.Helper()
	u := mustUnit(t, units.Worker)
	v := u["Service"]["ExecStart"]
	if len(v) != 1 {
		t.Fatalf("units/%s: ExecStart= %q, want one command", units.Worker, v)
	}
	words, err := appconf.SplitArgs(strings.ReplaceAll(v[0], "@BINDIR@", filepath.Join(pkg, "bin")))
	if err != nil {
		t.Fatal(err)
	}
	i := slices.Index(words, "--")
	if i < 0 {
		t.Fatalf("units/%s: ExecStart=%s has no --", units.Worker, v[0])
	}
	return words[:i+1], words[i+1:]
}

// checkWorkers: both worker templates, assembled from pkg and the drop-ins
// the generator made of the module's app.conf, run pkg's launcher (as
// lodis-worker.conf names it) with args, %i being the port, and are alike
// in everything else.
func checkWorkers(t *testing.T, pkg, genDir string, args []string) {
	t.Helper()
	launcher, _ := workerCommand(t, pkg)
	want := append(slices.Clone(launcher), args...)
	for i, a := range want {
		want[i] = strings.ReplaceAll(a, "%i", "18505")
	}
	var first unit
	for _, tmpl := range units.WorkerTemplates {
		u := workerUnit(t, pkg, genDir, tmpl, "18505")
		if got := execStart(t, u); !slices.Equal(got, want) {
			t.Errorf("%s ExecStart %q, want %q", tmpl, got, want)
		}
		if first == nil {
			first = u
		} else if !sameService(first, u) {
			t.Errorf("%s runs otherwise than %s:\n%v\n%v", tmpl, units.WorkerTemplates[0], u["Service"], first["Service"])
		}
	}
}

// sameService compares two units' [Service] sections but for Sockets=
// (the alternate worker names its port's socket).
func sameService(a, b unit) bool {
	keys := map[string]bool{}
	for k := range a["Service"] {
		keys[k] = true
	}
	for k := range b["Service"] {
		keys[k] = true
	}
	for k := range keys {
		if k != "Sockets" && !slices.Equal(a["Service"][k], b["Service"][k]) {
			return false
		}
	}
	return true
}

// tmpfilesCurrent runs the module's tmpfiles.d script on pkg and checks
// that every line of the package's own file is there as it is but the link
// current, which must be L+ and point at target. Lines the package may gain
// (a directory and a link of the worker's root under /run) are added to
// pkg's file first: they must come through untouched too.
func tmpfilesCurrent(t *testing.T, script, pkg, target string) {
	t.Helper()
	file := filepath.Join(pkg, "lib", "tmpfiles.d", "lodis.conf")
	src, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(src), "/run/lodis-test-root") {
		src = append(src, "d /run/lodis-test-root 0755 root root -\nL /run/lodis-test-root/bin - - - - /usr/bin\n"...)
		if err := os.WriteFile(file, src, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out := t.TempDir()
	c := exec.Command("bash", "-euc", script)
	c.Env = append(os.Environ(), "out="+out)
	if b, err := c.CombinedOutput(); err != nil {
		t.Fatalf("tmpfiles script: %v: %s", err, b)
	}
	got, err := os.ReadFile(filepath.Join(out, "lib", "tmpfiles.d", "lodis.conf"))
	if err != nil {
		t.Fatal(err)
	}
	in, outLines := strings.Split(string(src), "\n"), strings.Split(string(got), "\n")
	if len(in) != len(outLines) {
		t.Fatalf("NixOS tmpfiles has %d lines, the package's %d:\n%s", len(outLines), len(in), got)
	}
	links := 0
	for i, l := range in {
		f := strings.Fields(l)
		if len(f) >= 2 && strings.HasPrefix(f[0], "L") && f[1] == "/var/lib/lodis/current" {
			links++
			want := append([]string{"L+"}, f[1:]...)
			want[len(want)-1] = target
			if g := strings.Fields(outLines[i]); !slices.Equal(g, want) {
				t.Errorf("NixOS tmpfiles line %q, want %q", outLines[i], strings.Join(want, " "))
			}
		} else if outLines[i] != l {
			t.Errorf("NixOS tmpfiles changed line %d %q into %q", i+1, l, outLines[i])
		}
	}
	if links != 1 {
		t.Errorf("the package's tmpfiles has %d L lines for /var/lib/lodis/current, want one", links)
	}
}
