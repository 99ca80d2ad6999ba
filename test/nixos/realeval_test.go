package nixos

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// The real NixOS evaluation (nix/eval-nixos.nix) needs nixpkgs' lib/ and
// nixos/: a snapshot of them sits beside the repository, in
// ../shared/nixpkgs, or where LODIS_NIXPKGS says. Without one the tests
// below say so and skip; the stub-based tests run regardless.

// snapshotEnv names a nixpkgs tree to use instead of ../shared/nixpkgs.
const snapshotEnv = "LODIS_NIXPKGS"

var (
	snapshotOnce sync.Once
	snapshotDir  string
	snapshotErr  error
)

// nixpkgsSnapshot returns the nixpkgs tree for the real evaluation, or why
// there is none. A tree counts when it has lib/ and nixos/lib/eval-config.nix.
func nixpkgsSnapshot() (string, error) {
	snapshotOnce.Do(func() {
		dir, from := filepath.Join(filepath.Dir(repo), "shared", "nixpkgs"), "beside the repository"
		if env := os.Getenv(snapshotEnv); env != "" {
			dir, from = env, "in $"+snapshotEnv
		}
		for _, f := range []string{"lib/default.nix", "nixos/lib/eval-config.nix", "nixos/modules/module-list.nix"} {
			if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
				snapshotErr = fmt.Errorf("no nixpkgs snapshot %s (%s lacks %s): the real NixOS evaluation needs nixpkgs' lib/ and nixos/ there", from, dir, f)
				return
			}
		}
		snapshotDir, snapshotErr = filepath.Abs(dir)
	})
	return snapshotDir, snapshotErr
}

// needSnapshot skips a real-evaluation test when there is no snapshot, and
// fails it when LODIS_NIXPKGS names a tree that is not one.
func needSnapshot(t *testing.T) string {
	t.Helper()
	dir, err := nixpkgsSnapshot()
	if err != nil {
		if os.Getenv(snapshotEnv) != "" {
			t.Fatal(err)
		}
		t.Skipf("real NixOS evaluation not run: %v", err)
	}
	return dir
}

// nixosUnit is one of config.systemd.units: the text NixOS writes (the
// whole unit, or the drop-in overrides.conf when overrideStrategy is
// asDropin) and what links it in.
type nixosUnit struct {
	Text             string   `json:"text"`
	Enable           bool     `json:"enable"`
	WantedBy         []string `json:"wantedBy"`
	RequiredBy       []string `json:"requiredBy"`
	OverrideStrategy string   `json:"overrideStrategy"`
}

// nixosMachine is what nix/eval-nixos.nix reports of one machine.
type nixosMachine struct {
	Units           map[string]nixosUnit `json:"units"`
	SystemdPackages []string             `json:"systemdPackages"`
	SystemPackages  []string             `json:"systemPackages"`
	PathsToLink     []string             `json:"pathsToLink"`
	Polkit          struct {
		Enable bool `json:"enable"`
		Etc    map[string]struct {
			Enable bool   `json:"enable"`
			Target string `json:"target"`
			Source string `json:"source"`
		} `json:"etc"`
	} `json:"polkit"`
	Firewall struct {
		Enable          bool  `json:"enable"`
		AllowedTCPPorts []int `json:"allowedTCPPorts"`
	} `json:"firewall"`
	Nginx struct {
		Enable    bool `json:"enable"`
		Upstreams map[string]struct {
			Servers map[string]struct{} `json:"servers"`
		} `json:"upstreams"`
		VirtualHosts map[string]struct {
			Locations map[string]struct {
				ProxyPass *string `json:"proxyPass"`
			} `json:"locations"`
		} `json:"virtualHosts"`
	} `json:"nginx"`
	Users struct {
		Lodis *struct {
			IsSystemUser bool   `json:"isSystemUser"`
			Group        string `json:"group"`
			Home         string `json:"home"`
			Description  string `json:"description"`
		} `json:"lodis"`
		Groups []string `json:"groups"`
	} `json:"users"`
	Warnings []string `json:"warnings"`
	Lodis    struct {
		Enable        bool    `json:"enable"`
		Ports         []int   `json:"ports"`
		ListenAddress *string `json:"listenAddress"`
		Package       string  `json:"package"`
		App           struct {
			Args    []string `json:"args"`
			Program *string  `json:"program"`
			Package *string  `json:"package"`
			Text    *string  `json:"text"`
		} `json:"app"`
	} `json:"lodis"`
	// AppConf is environment.etc."lodis/app.conf".
	AppConf *struct {
		Enable bool   `json:"enable"`
		Target string `json:"target"`
		Text   string `json:"text"`
		Mode   string `json:"mode"`
	} `json:"appConf"`
	// TmpfilesScripts build lodis's tmpfiles.d package (one).
	TmpfilesScripts []string `json:"tmpfilesScripts"`
	// Generators is NixOS's script filling /etc/systemd/system-generators.
	Generators struct {
		Script   string   `json:"script"`
		Packages []string `json:"packages"`
	} `json:"generators"`
	Deployment *struct {
		TargetHost string   `json:"targetHost"`
		Tags       []string `json:"tags"`
	} `json:"deployment"`
}

// installedPackage lays out a lodis package as nix/package.nix builds it,
// with the Makefile's own install recipe (PREFIX=$out), and returns its
// root; the binary is a stand-in, nothing here runs it.
func installedPackage(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "lodis")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return installPackage(t, bin)
}

// installPackage is installedPackage with bin as the package's binary.
func installPackage(t *testing.T, bin string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "lodis")
	// PREFIX is the package's own path, as $out is for nix/package.nix, so
	// that every path its files name (@BINDIR@) is inside it. DESTDIR=/
	// changes no path but keeps make from touching this host (without a
	// DESTDIR it would run systemd-sysusers and daemon-reload here).
	c := exec.Command("make", "-s", "install", "DESTDIR=/", "PREFIX="+out, "BIN="+bin, "VERSION=test", "COMMIT=test")
	c.Dir = repo
	if b, err := c.CombinedOutput(); err != nil {
		t.Fatalf("make install: %v: %s", err, b)
	}
	return out
}

// nixosEval evaluates nix/eval-nixos.nix with the snapshot: one machine
// configured by config, or, when hive is a file, every node of that hive;
// pkg stands for the lodis package; extra are more arguments of
// nix-instantiate (--argstr appPackage PATH, --arg module PATH). A warning on
// stderr is an error: the evaluation must be as quiet as nixos-rebuild would
// be.
func nixosEval(t *testing.T, snapshot string, config any, hive, pkg string, extra ...string) (map[string]*nixosMachine, error) {
	t.Helper()
	args := append([]string{"--eval", "--strict", "--json", "--store", "dummy://", "nix/eval-nixos.nix", "--argstr", "nixpkgs", snapshot, "--argstr", "package", pkg}, extra...)
	what := "hive " + hive
	if config == nil && hive == "" {
		what = strings.Join(extra, " ")
	} else if hive != "" {
		args = append(args, "--arg", "hive", hive)
	} else {
		cj, err := json.Marshal(config)
		if err != nil {
			t.Fatal(err)
		}
		args = append(args, "--argstr", "config", string(cj))
		what = string(cj)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	c := nixCmd(ctx, t, "nix-instantiate", args...)
	c.Stdout, c.Stderr = &stdout, &stderr
	if err := c.Run(); err != nil {
		return nil, fmt.Errorf("evaluate NixOS with %s: %w: %s", what, err, strings.TrimSpace(stderr.String()))
	}
	if w := warningLines(stderr.String()); len(w) > 0 {
		return nil, fmt.Errorf("evaluate NixOS with %s: warnings: %s", what, strings.Join(w, "\n"))
	}
	var r map[string]*nixosMachine
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		return nil, fmt.Errorf("decode evaluation: %w: %s", err, stdout.String())
	}
	return r, nil
}

// warningLines are the lines of nix's stderr that warn (trace: warning ...,
// trace: evaluation warning ..., warning: ...).
func warningLines(stderr string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(stderr))
	for sc.Scan() {
		if l := sc.Text(); strings.Contains(strings.ToLower(l), "warning") {
			out = append(out, l)
		}
	}
	return out
}

// mustMachine evaluates one machine and returns it.
func mustMachine(t *testing.T, snapshot string, config any, pkg string, extra ...string) *nixosMachine {
	t.Helper()
	r, err := nixosEval(t, snapshot, config, "", pkg, extra...)
	if err != nil {
		t.Fatal(err)
	}
	m, ok := r["machine"]
	if !ok || m == nil {
		t.Fatalf("evaluation has no machine: %v", r)
	}
	return m
}

// dropinLines is a drop-in's settings as withDropin applies them: each key
// with its values in order, an empty value first where the drop-in resets
// the key.
func dropinLines(t *testing.T, name, text string) map[string]map[string][]string {
	t.Helper()
	out := map[string]map[string][]string{}
	err := scanUnit(name, text, func(section, key, value string) {
		if out[section] == nil {
			out[section] = map[string][]string{}
		}
		out[section][key] = append(out[section][key], value)
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// effective is a units/ file with a NixOS drop-in applied, section by section.
func effective(t *testing.T, file string, d nixosUnit) unit {
	t.Helper()
	if d.OverrideStrategy != "asDropin" {
		t.Fatalf("%s: overrideStrategy %q, want asDropin (else NixOS replaces the package's unit)", file, d.OverrideStrategy)
	}
	u := mustUnit(t, file)
	for section, kv := range dropinLines(t, file, d.Text) {
		if section == "Install" {
			continue // NixOS links units by wantedBy; [Install] is not read
		}
		u = u.withDropin(section, kv)
	}
	return u
}
