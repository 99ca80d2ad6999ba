package nixos

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/lodis/lodis/units"
)

// TestPackageLayout checks what nix/package.nix installs: it runs the
// Makefile's own install recipe with PREFIX=$out, so the package is what
// `make install` lays out, checked here file by file against units/: every
// unit with @BINDIR@ made the package's bin/, lodis-worker.conf as the
// drop-in 10-worker.conf of both worker templates, tmpfiles.d, sysusers.d,
// the polkit rule, and lodis-generator, a relative link to bin/lodis (which
// NixOS links into /etc/systemd/system-generators from systemd.packages).
func TestPackageLayout(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repo, "nix", "package.nix"))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^\s*make install .*PREFIX=\$out\b`).Match(b) {
		t.Fatal("nix/package.nix does not run `make install ... PREFIX=$out`: the package would not be what make install lays out")
	}

	pkg := installedPackage(t)
	bindir := filepath.Join(pkg, "bin")
	installed := func(rel string) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(pkg, rel))
		if err != nil {
			t.Fatalf("the package has no %s: %v", rel, err)
		}
		return string(b)
	}
	source := func(name string) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(repo, name))
		if err != nil {
			t.Fatal(err)
		}
		return strings.ReplaceAll(string(b), "@BINDIR@", bindir)
	}

	var unitFiles []string
	for _, pat := range []string{"*.socket", "*.service", "*.target", "*.path"} {
		m, err := filepath.Glob(filepath.Join(repo, "units", pat))
		if err != nil {
			t.Fatal(err)
		}
		unitFiles = append(unitFiles, m...)
	}
	if len(unitFiles) < 8 {
		t.Fatalf("units/ has only %d unit files", len(unitFiles))
	}
	for _, f := range unitFiles {
		name := filepath.Base(f)
		if got := installed("lib/systemd/system/" + name); got != source("units/"+name) {
			t.Errorf("lib/systemd/system/%s is not units/%s with @BINDIR@=%s", name, name, bindir)
		}
	}
	for _, tmpl := range units.WorkerTemplates {
		installed("lib/systemd/system/" + tmpl)
		rel := "lib/systemd/system/" + tmpl + ".d/" + units.WorkerDropIn
		if got := installed(rel); got != source("units/"+units.Worker) {
			t.Errorf("%s is not units/%s with @BINDIR@=%s", rel, units.Worker, bindir)
		}
	}
	if got := installed("lib/tmpfiles.d/lodis.conf"); got != source("units/lodis.tmpfiles") {
		t.Error("lib/tmpfiles.d/lodis.conf is not units/lodis.tmpfiles")
	}
	if got := installed("lib/sysusers.d/lodis.conf"); got != source("units/lodis.sysusers") {
		t.Error("lib/sysusers.d/lodis.conf is not units/lodis.sysusers")
	}
	if got := installed("share/polkit-1/rules.d/50-lodis.rules"); got != source("packaging/polkit/50-lodis.rules") {
		t.Error("share/polkit-1/rules.d/50-lodis.rules is not packaging/polkit/50-lodis.rules")
	}

	gen := filepath.Join(pkg, "lib", "systemd", "system-generators", "lodis-generator")
	target, err := os.Readlink(gen)
	if err != nil {
		t.Fatalf("no generator link: %v", err)
	}
	if filepath.IsAbs(target) {
		t.Errorf("lodis-generator links to %s: an absolute link made under a DESTDIR would name the staging directory", target)
	}
	if resolved, err := filepath.EvalSymlinks(gen); err != nil || resolved != filepath.Join(bindir, "lodis") {
		t.Errorf("lodis-generator resolves to %q (%v), want %s", resolved, err, filepath.Join(bindir, "lodis"))
	}
}
