package nixos

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/lodis/lodis/internal/appconf"
)

// appConfHeader is the comment that opens the app.conf the module writes.
const appConfHeader = "# /etc/lodis/app.conf, written by NixOS from services.lodis.app: change the\n" +
	"# configuration, not this file. A key left out keeps lodis's default.\n"

// appCase is a configuration of services.lodis, the app.conf the module
// must write for it, what lodis must read from that file, and where
// /var/lib/lodis/current must point.
type appCase struct {
	name     string
	settings map[string]any
	// withApp sets services.lodis.app.package to an app package whose main
	// program is bin/app.
	withApp bool
	lines   string                       // app.conf after its header
	want    func(c *appconf.Config)      // changes to appconf.Default()
	current func(pkg, app string) string // current's target
}

func lodisBin(pkg, _ string) string { return filepath.Join(pkg, "bin", "lodis") }
func appBin(_, app string) string   { return filepath.Join(app, "bin", "app") }

// appCases: the default app with and without the old options, an app
// package left to its defaults, and an app with every setting and
// arguments that need quoting (quotes, a backslash, an empty word, spaces,
// a specifier, a variable, UTF-8).
func appCases() []appCase {
	return []appCase{
		{
			name:     "defaults",
			settings: map[string]any{},
			lines:    "APP_ARGS=serve --port %i\n",
			want:     func(c *appconf.Config) {},
			current:  lodisBin,
		},
		{
			name:     "lodis serve with idleTimeout and extraArgs",
			settings: map[string]any{"idleTimeout": "45s", "extraArgs": []string{"--log-level", "debug"}},
			lines:    "APP_ARGS=serve --port %i --idle-timeout 45s --log-level debug\n",
			want: func(c *appconf.Config) {
				c.Args = []string{"serve", "--port", "%i", "--idle-timeout", "45s", "--log-level", "debug"}
			},
			current: lodisBin,
		},
		{
			name: "lodis serve with arguments of its own, and extraArgs after them",
			settings: map[string]any{"extraArgs": []string{"--log-level", "debug"},
				"app": map[string]any{"args": []string{"serve", "--port", "%i", "--max-conns", "64"}, "idleTimeout": "10m"}},
			lines: "APP_ARGS=serve --port %i --max-conns 64 --log-level debug\nIDLE_TIMEOUT=10m\n",
			want: func(c *appconf.Config) {
				c.Args = []string{"serve", "--port", "%i", "--max-conns", "64", "--log-level", "debug"}
				c.IdleTimeout = 10 * time.Minute
			},
			current: lodisBin,
		},
		{
			name:     "an app package, its defaults",
			settings: map[string]any{},
			withApp:  true,
			lines:    "APP_ARGS=\n",
			want:     func(c *appconf.Config) { c.Args = nil },
			current:  appBin,
		},
		{
			name: "an app package, ready on health, quoted arguments",
			settings: map[string]any{"app": map[string]any{
				"args": []string{"--title", `say "hi"`, "--port=${LODIS_PORT}"}, "ready": "health", "stateDir": false, "overlap": true}},
			withApp: true,
			lines:   `APP_ARGS='--title "say \"hi\"" "--port=${LODIS_PORT}"'` + "\nREADY=health\nSTATE_DIR=no\nOVERLAP=yes\n",
			want: func(c *appconf.Config) {
				c.Args = []string{"--title", `say "hi"`, "--port=${LODIS_PORT}"}
				c.Ready = appconf.ReadyHealth
			},
			current: appBin,
		},
		{
			name: "a program, every setting",
			settings: map[string]any{"app": map[string]any{
				"program":    "/opt/app/bin/app",
				"args":       []string{"--title", `say "hi"`, "it's", `a\b`, "", "%i", "${LODIS_PORT}", "with space", "héllo", "100%%"},
				"healthPath": "/healthz", "healthTimeout": "500ms", "ready": "health",
				"environmentFile": "/run/secrets/app.env", "stateDir": true, "idleTimeout": "5m",
				"stopTimeout": "1m30s", "overlap": false,
			}},
			lines: `APP_ARGS="--title \"say \\\"hi\\\"\" \"it's\" \"a\\\\b\" \"\" %i \"${LODIS_PORT}\" \"with space\" \"héllo\" 100%%"` + "\n" +
				"HEALTH_PATH=/healthz\nHEALTH_TIMEOUT=500ms\nREADY=health\nENV_FILE=/run/secrets/app.env\nSTATE_DIR=yes\n" +
				"IDLE_TIMEOUT=5m\nSTOP_TIMEOUT=1m30s\nOVERLAP=no\n",
			want: func(c *appconf.Config) {
				c.Args = []string{"--title", `say "hi"`, "it's", `a\b`, "", "%i", "${LODIS_PORT}", "with space", "héllo", "100%%"}
				c.HealthPath, c.HealthTimeout, c.Ready = "/healthz", 500*time.Millisecond, appconf.ReadyHealth
				c.EnvFile, c.StateDir, c.IdleTimeout = "/run/secrets/app.env", true, 5*time.Minute
				c.StopTimeout, c.Overlap = 90*time.Second, false
			},
			current: func(string, string) string { return "/opt/app/bin/app" },
		},
	}
}

// appPackage lays out an app package: bin/app, a script.
func appPackage(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "app")
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bin", "app"), []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// checkApp checks what a configuration made of the app: app.conf's text,
// that lodis calls it good and reads what the options say, that the
// generator, run through generator, makes both worker templates run it
// after lodis-worker.conf's launcher, and where current points.
func checkApp(t *testing.T, tc appCase, text, tmpfilesScript, generator, pkg, app string) {
	t.Helper()
	if want := appConfHeader + tc.lines; text != want {
		t.Errorf("app.conf:\n%s\nwant:\n%s", text, want)
	}
	got := checkAppConf(t, text)
	want := appconf.Default()
	tc.want(&want)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("lodis reads the module's app.conf as\n%+v\nwant\n%+v", got, want)
	}
	checkWorkers(t, pkg, runGenerator(t, generator, text), want.Args)
	tmpfilesCurrent(t, tmpfilesScript, pkg, tc.current(pkg, app))
}

// TestModuleApp evaluates each appCase with the stub lib, on a package
// installed by make install with the lodis binary of this tree; the
// generator runs through the package's own link.
func TestModuleApp(t *testing.T) {
	pkg := installPackage(t, lodisBinary(t))
	app := appPackage(t)
	generator := filepath.Join(pkg, "lib", "systemd", "system-generators", "lodis-generator")
	for _, tc := range appCases() {
		t.Run(tc.name, func(t *testing.T) {
			settings := map[string]any{"enable": true}
			for k, v := range tc.settings {
				settings[k] = v
			}
			var extra []string
			if tc.withApp {
				extra = []string{"--argstr", "appPackage", app}
			}
			r, err := eval(t, lodis(settings), pkg, extra...)
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := r.Systemd.Services["lodis@"]; ok {
				t.Errorf("the module overrides lodis@.service: the app reaches the workers through app.conf and the generator only")
			}
			if len(r.Systemd.TmpfilesScripts) != 1 {
				t.Fatalf("tmpfiles packages: %d scripts, want one", len(r.Systemd.TmpfilesScripts))
			}
			checkApp(t, tc, r.Environment.Etc["lodis/app.conf"].Text, r.Systemd.TmpfilesScripts[0], generator, pkg, app)
		})
	}
}

// TestNixOSApp evaluates each appCase in a real NixOS: app.conf as NixOS's
// environment.etc has it, the generator linked by NixOS's own script from
// systemd.packages, the tmpfiles.d package NixOS is given.
func TestNixOSApp(t *testing.T) {
	snap := needSnapshot(t)
	pkg := installPackage(t, lodisBinary(t))
	app := appPackage(t)
	for _, tc := range appCases() {
		t.Run(tc.name, func(t *testing.T) {
			settings := map[string]any{"enable": true, "ports": []int{18505}}
			for k, v := range tc.settings {
				settings[k] = v
			}
			var extra []string
			if tc.withApp {
				extra = []string{"--argstr", "appPackage", app}
			}
			m := mustMachine(t, snap, lodis(settings), pkg, extra...)
			if m.AppConf == nil || !m.AppConf.Enable || m.AppConf.Target != "lodis/app.conf" {
				t.Fatalf("environment.etc.\"lodis/app.conf\" = %+v, want /etc/lodis/app.conf", m.AppConf)
			}
			for _, u := range []string{"lodis@.service", "lodis-alt@.service"} {
				if d, ok := m.Units[u]; ok {
					t.Errorf("NixOS overrides %s: %q; the app reaches the workers through app.conf and the generator only", u, d.Text)
				}
			}
			if len(m.TmpfilesScripts) != 1 {
				t.Fatalf("tmpfiles packages: %d lodis scripts, want one", len(m.TmpfilesScripts))
			}
			if len(m.Warnings) > 0 {
				t.Errorf("warnings: %q", m.Warnings)
			}
			generator := filepath.Join(nixosGenerators(t, m, pkg), "lodis-generator")
			checkApp(t, tc, m.AppConf.Text, m.TmpfilesScripts[0], generator, pkg, app)
		})
	}
}

// nixosGenerators runs NixOS's script for /etc/systemd/system-generators,
// with the lodis package among systemd.packages, and returns the directory
// it made. The other packages on the list are stand-ins with no files
// (they would fail the script's `ln`), so only pkg is given to it.
func nixosGenerators(t *testing.T, m *nixosMachine, pkg string) string {
	t.Helper()
	found := false
	for _, p := range m.Generators.Packages {
		found = found || p == pkg
	}
	if !found {
		t.Fatalf("the generators' packages %q lack the lodis package %s", m.Generators.Packages, pkg)
	}
	out := filepath.Join(t.TempDir(), "system-generators")
	c := exec.Command("bash", "-euc", m.Generators.Script)
	c.Env = append(os.Environ(), "out="+out, "packages="+pkg)
	if b, err := c.CombinedOutput(); err != nil {
		t.Fatalf("NixOS's system-generators script: %v: %s", err, b)
	}
	return out
}
