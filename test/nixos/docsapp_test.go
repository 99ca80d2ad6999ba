package nixos

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/lodis/lodis/internal/appconf"
)

// TestDocsApp evaluates docs/fleet.md's app.nix, as written, in a real
// NixOS with lodis's module and examples/python/app.py beside it as app.py:
// /etc/lodis/app.conf is the text the page shows (after the module's
// header), lodis calls it good and reads it as the page says, the generator
// NixOS links makes both workers run the app with no arguments, current
// points at the app's program, whose interpreter line names the store's
// Python, and there is no warning.
func TestDocsApp(t *testing.T) {
	files := fleetFiles(t)
	module, ok := files["app.nix"]
	if !ok {
		t.Fatal("docs/fleet.md has no block for app.nix (a fenced block starting with '# app.nix: ...')")
	}
	page, err := os.ReadFile(filepath.Join(repo, "docs", "fleet.md"))
	if err != nil {
		t.Fatal(err)
	}
	shown := regexp.MustCompile("(?s)This gives `/etc/lodis/app.conf`:\n\n```ini\n(.*?)```").FindSubmatch(page)
	if shown == nil {
		t.Fatal("docs/fleet.md does not show app.nix's /etc/lodis/app.conf (\"This gives `/etc/lodis/app.conf`:\" and an ini block)")
	}

	dir := t.TempDir()
	py, err := os.ReadFile(filepath.Join(repo, "examples", "python", "app.py"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "app.py"), py, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "app.nix"), []byte(module), 0o644); err != nil {
		t.Fatal(err)
	}

	snap := needSnapshot(t)
	pkg := installPackage(t, lodisBinary(t))
	m := mustMachine(t, snap, nil, pkg, "--arg", "module", filepath.Join(dir, "app.nix"))
	if len(m.Warnings) > 0 {
		t.Errorf("warnings: %q", m.Warnings)
	}
	if m.AppConf == nil {
		t.Fatal("no /etc/lodis/app.conf")
	}
	if want := appConfHeader + string(shown[1]); m.AppConf.Text != want {
		t.Errorf("app.nix gives app.conf\n%s\nthe page shows\n%s", m.AppConf.Text, want)
	}
	got := checkAppConf(t, m.AppConf.Text)
	want := appconf.Default()
	want.Args, want.Ready, want.IdleTimeout, want.StopTimeout = nil, appconf.ReadyHealth, 5*time.Minute, 15*time.Second
	if !reflect.DeepEqual(got, want) {
		t.Errorf("lodis reads app.nix's app.conf as\n%+v\nwant\n%+v", got, want)
	}
	checkWorkers(t, pkg, runGenerator(t, filepath.Join(nixosGenerators(t, m, pkg), "lodis-generator"), m.AppConf.Text), nil)

	app := m.Lodis.App
	if app.Package == nil || app.Program == nil || *app.Program != *app.Package+"/bin/hello" {
		t.Fatalf("services.lodis.app package %v, program %v: want the program bin/hello of the package", app.Package, app.Program)
	}
	if len(m.TmpfilesScripts) != 1 {
		t.Fatalf("tmpfiles packages: %d lodis scripts, want one", len(m.TmpfilesScripts))
	}
	tmpfilesCurrent(t, m.TmpfilesScripts[0], pkg, *app.Program)
	if app.Text == nil {
		t.Fatal("the app package is not the script writeScriptBin was given")
	}
	first, rest, _ := strings.Cut(*app.Text, "\n")
	if !regexp.MustCompile(`^#!/nix/store/[^/]+-python3/bin/python3$`).MatchString(first) {
		t.Errorf("the app's interpreter line is %q, want the store's python3", first)
	}
	if _, pyRest, _ := strings.Cut(string(py), "\n"); rest != pyRest {
		t.Error("the app's script is not examples/python/app.py after its first line")
	}
}
