package packaging

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDebIsReproducible builds the package a second time, from another
// output directory and under another umask, and expects the same bytes.
func TestDebIsReproducible(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	again, err := makeDebShell(ctx, t.TempDir(), "umask 077")
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(again) != filepath.Base(deb) {
		t.Fatalf("second build is named %s, first %s", filepath.Base(again), filepath.Base(deb))
	}
	a, b := fileSHA256(t, deb), fileSHA256(t, again)
	if a != b {
		t.Fatalf("two builds of one tree differ: %s has sha256 %s, %s has %s", deb, a, again, b)
	}
}

func fileSHA256(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", sha256.Sum256(b))
}

// entry is one file of the package's data archive.
type entry struct {
	hdr  *tar.Header
	data []byte
}

func debFiles(t *testing.T, deb string) map[string]entry {
	t.Helper()
	out, err := exec.Command("dpkg-deb", "--fsys-tarfile", deb).Output()
	if err != nil {
		t.Fatalf("dpkg-deb --fsys-tarfile: %v", err)
	}
	files := map[string]entry{}
	tr := tar.NewReader(bytes.NewReader(out))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("read data archive: %v", err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("read %s: %v", h.Name, err)
		}
		files[strings.TrimPrefix(h.Name, "./")] = entry{h, b}
	}
	return files
}

// TestDebContents checks that the package carries every unit file from
// units/ (with @BINDIR@ made /usr/bin) and nothing drifts from them, plus the
// binary, sysusers.d, tmpfiles.d, the polkit rules and the docs, all owned
// by root with the same timestamp.
func TestDebContents(t *testing.T) {
	files := debFiles(t, deb)
	want := map[string][]byte{} // package path -> exact content
	units, err := filepath.Glob(filepath.Join(repo, "units", "*"))
	if err != nil {
		t.Fatal(err)
	}
	nunits := 0
	for _, u := range units {
		b, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		b = bytes.ReplaceAll(b, []byte("@BINDIR@"), []byte("/usr/bin"))
		name := filepath.Base(u)
		switch filepath.Ext(name) {
		case ".socket", ".service", ".target", ".path", ".timer":
			want["usr/lib/systemd/system/"+name] = b
			nunits++
		case ".tmpfiles":
			want["usr/lib/tmpfiles.d/"+strings.TrimSuffix(name, ".tmpfiles")+".conf"] = b
		case ".sysusers":
			want["usr/lib/sysusers.d/"+strings.TrimSuffix(name, ".sysusers")+".conf"] = b
		case ".conf":
			// lodis-worker.conf: a drop-in of both worker templates.
			for _, tmpl := range []string{"lodis@.service", "lodis-alt@.service"} {
				want["usr/lib/systemd/system/"+tmpl+".d/10-worker.conf"] = b
			}
		case ".go":
			// Package units, which embeds the files for lodis's own code:
			// not installed.
		default:
			t.Errorf("units/%s: the package does not know where this file goes", name)
		}
	}
	if nunits < 3 {
		t.Fatalf("found %d unit files in units/, expected the socket, service and target at least", nunits)
	}
	// The alerting rules and the dashboard, as packaging/ has them.
	for src, dst := range map[string]string{
		"packaging/prometheus/lodis.rules.yml":   "usr/share/lodis/prometheus/lodis.rules.yml",
		"packaging/grafana/lodis-dashboard.json": "usr/share/lodis/grafana/lodis-dashboard.json",
	} {
		b, err := os.ReadFile(filepath.Join(repo, src))
		if err != nil {
			t.Fatal(err)
		}
		want[dst] = b
	}
	rules, _ := filepath.Glob(filepath.Join(repo, "packaging", "polkit", "*.rules"))
	for _, r := range rules {
		b, err := os.ReadFile(r)
		if err != nil {
			t.Fatal(err)
		}
		want["usr/share/polkit-1/rules.d/"+filepath.Base(r)] = b
	}
	for p, content := range want {
		e, ok := files[p]
		if !ok {
			t.Errorf("package lacks %s", p)
			continue
		}
		if !bytes.Equal(e.data, content) {
			t.Errorf("%s in the package differs from its source:\n%s\nwant:\n%s", p, e.data, content)
		}
		if e.hdr.Mode&0o777 != 0o644 {
			t.Errorf("%s has mode %o, want 644", p, e.hdr.Mode&0o777)
		}
	}
	for p, e := range files {
		if strings.HasPrefix(p, "usr/lib/systemd/system/") && e.hdr.Typeflag == tar.TypeReg {
			if _, ok := want[p]; !ok {
				t.Errorf("package has unit %s, which is not in units/", p)
			}
		}
	}

	bin, ok := files["usr/bin/lodis"]
	switch {
	case !ok:
		t.Error("package lacks usr/bin/lodis")
	case bin.hdr.Mode&0o777 != 0o755:
		t.Errorf("usr/bin/lodis has mode %o, want 755", bin.hdr.Mode&0o777)
	case !bytes.HasPrefix(bin.data, []byte("\x7fELF")):
		t.Error("usr/bin/lodis is not an ELF binary")
	}
	for _, p := range []string{"usr/share/doc/lodis/copyright", "usr/share/doc/lodis/changelog.gz",
		"usr/share/doc/lodis/README.Debian", "usr/share/man/man1/lodis.1.gz"} {
		if e, ok := files[p]; !ok || len(e.data) == 0 {
			t.Errorf("package lacks %s (or it is empty)", p)
		}
	}
	if !bytes.Contains(files["usr/share/doc/lodis/README.Debian"].data, []byte("systemctl enable --now lodis@8080.socket")) {
		t.Error("README.Debian does not tell how to enable a port")
	}
	if !bytes.Contains(files["usr/share/doc/lodis/README.Debian"].data, []byte("systemctl enable --now lodis-metrics.socket")) {
		t.Error("README.Debian does not tell how to turn the metrics socket on")
	}

	var mtime time.Time
	for p, e := range files {
		if e.hdr.Uid != 0 || e.hdr.Gid != 0 || e.hdr.Uname != "root" || e.hdr.Gname != "root" {
			t.Errorf("%s is owned by %s(%d):%s(%d), want root:root", p, e.hdr.Uname, e.hdr.Uid, e.hdr.Gname, e.hdr.Gid)
		}
		if mtime.IsZero() {
			mtime = e.hdr.ModTime
		} else if !e.hdr.ModTime.Equal(mtime) {
			t.Errorf("%s has mtime %s, others %s: timestamps are not normalised", p, e.hdr.ModTime, mtime)
		}
	}

	arch, err := exec.Command("dpkg", "--print-architecture").Output()
	if err != nil {
		t.Fatal(err)
	}
	depends := "systemd"
	if len(rules) > 0 {
		depends += ", polkitd" // the supervisor acts through its polkit rule
	}
	for field, wantv := range map[string]string{"Package": "lodis", "Architecture": strings.TrimSpace(string(arch)), "Depends": depends} {
		if got, err := debField(deb, field); err != nil || got != wantv {
			t.Errorf("control field %s = %q (%v), want %q", field, got, err, wantv)
		}
	}
	if wantName := fmt.Sprintf("lodis_%s_%s.deb", version, strings.TrimSpace(string(arch))); filepath.Base(deb) != wantName {
		t.Errorf("package is named %s, want %s", filepath.Base(deb), wantName)
	}
}

// TestLintianClean runs lintian on the package: no error, no warning, and no
// override that lintian no longer needs. Every override says why.
func TestLintianClean(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := exec.CommandContext(ctx, "lintian", "--fail-on", "error,warning", "--display-info", "--no-tag-display-limit", deb)
	out, err := c.CombinedOutput()
	if err != nil {
		t.Fatalf("lintian %s: %v\n%s", filepath.Base(deb), err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "unused-override") || strings.Contains(l, "mismatched-override") {
			t.Errorf("lintian: %s", l)
		}
	}

	f, err := os.Open(filepath.Join(repo, "packaging", "deb", "lintian-overrides"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	explained := false
	for n := 1; sc.Scan(); n++ {
		l := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(l, "#"):
			explained = true
		case l == "":
			explained = false
		case !explained:
			t.Errorf("lintian-overrides:%d: %q has no comment above it saying why", n, l)
		}
	}
}
