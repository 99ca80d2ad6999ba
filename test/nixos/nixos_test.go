// Package nixos checks the Nix side of lodis with Debian's nix-bin and no
// store: every .nix file parses, nix/package.nix's vendorHash is the hash of
// `go mod vendor`, the package is make install's layout, and nix/module.nix
// asks for exactly the units in units/ with the settings it was given, and
// describes the app in /etc/lodis/app.conf as lodis reads it (checked with
// bin/lodis itself: lodis config check, and the generator making the
// workers' drop-ins), evaluated twice over: with the stand-in
// lib (nix/lib-stub.nix through nix/eval-module.nix), and inside a real
// NixOS evaluation, nixpkgs' lib/ and nixos/ from the snapshot beside the
// repository (nix/eval-nixos.nix; realeval_test.go finds the snapshot, and
// says so when there is none). Building the package and the VM test
// (nix/test.nix) need real Nix; see README.md.
package nixos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/lodis/lodis/internal/appconf"
	"github.com/lodis/lodis/internal/testenv"
	"github.com/lodis/lodis/units"
)

var repo string

func TestMain(m *testing.M) {
	if _, err := exec.LookPath("nix-instantiate"); err != nil {
		fmt.Fprintln(os.Stderr, "test/nixos: nix-instantiate not found: install it with 'apt-get install -y nix-bin' (or run test/deps.sh)")
		os.Exit(1)
	}
	var err error
	if repo, err = testenv.RepoRoot(); err != nil {
		fmt.Fprintln(os.Stderr, "test/nixos:", err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// nixCmd runs a nix command offline, with a throwaway home.
func nixCmd(ctx context.Context, t *testing.T, name string, args ...string) *exec.Cmd {
	c := exec.CommandContext(ctx, name, args...)
	c.Dir = repo
	// A fresh HOME keeps nix away from the user's configuration; Go's caches
	// stay where they are (by default they live under HOME), so `go mod
	// vendor` reads the module cache instead of downloading every module.
	c.Env = append(os.Environ(), "HOME="+t.TempDir(), "NIX_PATH=")
	for _, v := range []string{"GOPATH", "GOMODCACHE", "GOCACHE"} {
		out, err := exec.Command("go", "env", v).Output()
		if err != nil {
			t.Fatalf("go env %s: %v", v, err)
		}
		c.Env = append(c.Env, v+"="+strings.TrimSpace(string(out)))
	}
	return c
}

// unitDef is what the module sets for one unit.
type unitDef struct {
	OverrideStrategy string         `json:"overrideStrategy"`
	WantedBy         []string       `json:"wantedBy"`
	ListenStreams    []string       `json:"listenStreams"`
	ServiceConfig    map[string]any `json:"serviceConfig"`
	SocketConfig     map[string]any `json:"socketConfig"`
}

type evalResult struct {
	Systemd struct {
		Packages        []string           `json:"packages"`
		Sockets         map[string]unitDef `json:"sockets"`
		Services        map[string]unitDef `json:"services"`
		Paths           map[string]unitDef `json:"paths"`
		TmpfilesScripts []string           `json:"tmpfilesScripts"`
	} `json:"systemd"`
	Users struct {
		Users map[string]struct {
			IsSystemUser bool   `json:"isSystemUser"`
			Group        string `json:"group"`
			Home         string `json:"home"`
			Description  string `json:"description"`
		} `json:"users"`
		Groups map[string]struct{} `json:"groups"`
	} `json:"users"`
	Networking struct {
		Firewall struct {
			AllowedTCPPorts []int `json:"allowedTCPPorts"`
		} `json:"firewall"`
	} `json:"networking"`
	Nginx *struct {
		Enable    bool `json:"enable"`
		Upstreams map[string]struct {
			Servers map[string]struct{} `json:"servers"`
		} `json:"upstreams"`
		VirtualHosts map[string]struct {
			Locations map[string]struct {
				ProxyPass string `json:"proxyPass"`
			} `json:"locations"`
		} `json:"virtualHosts"`
	} `json:"nginx"`
	Security struct {
		Polkit struct {
			Enable bool `json:"enable"`
		} `json:"polkit"`
	} `json:"security"`
	Environment struct {
		SystemPackages []string `json:"systemPackages"`
		Etc            map[string]struct {
			Text string `json:"text"`
		} `json:"etc"`
	} `json:"environment"`
	Warnings []string `json:"warnings"`
	// Lodis is services.lodis as evaluated, every option.
	Lodis map[string]any `json:"lodis"`
}

// eval evaluates the module with a configuration; pkg stands for the
// package; extra are more arguments of nix-instantiate (--argstr appPackage
// PATH).
func eval(t *testing.T, config any, pkg string, extra ...string) (*evalResult, error) {
	t.Helper()
	cj, err := json.Marshal(config)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args := []string{"--eval", "--strict", "--json", "--store", "dummy://", "nix/eval-module.nix", "--argstr", "config", string(cj)}
	if pkg != "" {
		args = append(args, "--argstr", "package", pkg)
	}
	args = append(args, extra...)
	var stdout, stderr bytes.Buffer
	c := nixCmd(ctx, t, "nix-instantiate", args...)
	c.Stdout, c.Stderr = &stdout, &stderr
	if err := c.Run(); err != nil {
		return nil, fmt.Errorf("evaluate module with %s: %w: %s", cj, err, strings.TrimSpace(stderr.String()))
	}
	var r evalResult
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		return nil, fmt.Errorf("decode evaluation: %w: %s", err, stdout.String())
	}
	return &r, nil
}

func mustEval(t *testing.T, config any) *evalResult {
	t.Helper()
	r, err := eval(t, config, "")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func lodis(settings map[string]any) map[string]any {
	return map[string]any{"services": map[string]any{"lodis": settings}}
}

func mustUnit(t *testing.T, name string) unit {
	t.Helper()
	u, err := parseUnit(name)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// values turns a NixOS unit setting (string, list, number, bool) into lines.
func values(v any) []string {
	switch v := v.(type) {
	case []any:
		var out []string
		for _, x := range v {
			out = append(out, fmt.Sprint(x))
		}
		return out
	case bool:
		if v {
			return []string{"yes"}
		}
		return []string{"no"}
	default:
		return []string{fmt.Sprint(v)}
	}
}

func dropin(cfg map[string]any) map[string][]string {
	out := map[string][]string{}
	for k, v := range cfg {
		out[k] = values(v)
	}
	return out
}

// effectiveSocket is units/lodis@.socket for one port with the module's drop-in.
func effectiveSocket(t *testing.T, port int, d unitDef) unit {
	t.Helper()
	di := dropin(d.SocketConfig)
	if d.ListenStreams != nil {
		di["ListenStream"] = append(di["ListenStream"], d.ListenStreams...)
	}
	return mustUnit(t, "lodis@.socket").withDropin("Socket", di).instance(fmt.Sprint(port))
}

func checkSockets(t *testing.T, r *evalResult, ports []int, listen func(port int) string) {
	t.Helper()
	var want, got []string
	for _, p := range ports {
		want = append(want, fmt.Sprintf("lodis@%d", p))
	}
	for n := range r.Systemd.Sockets {
		got = append(got, n)
	}
	sort.Strings(want)
	sort.Strings(got)
	if !slices.Equal(got, want) {
		t.Fatalf("sockets %q, want %q", got, want)
	}
	tmpl := mustUnit(t, "lodis@.socket")
	for _, p := range ports {
		d := r.Systemd.Sockets[fmt.Sprintf("lodis@%d", p)]
		if d.OverrideStrategy != "asDropin" {
			t.Errorf("lodis@%d.socket: overrideStrategy %q, want asDropin (the unit is the template's instance)", p, d.OverrideStrategy)
		}
		if !slices.Equal(d.WantedBy, tmpl.wantedBy()) {
			t.Errorf("lodis@%d.socket: wantedBy %q, want units/lodis@.socket's WantedBy %q", p, d.WantedBy, tmpl.wantedBy())
		}
		eff := effectiveSocket(t, p, d)
		if got := eff["Socket"]["ListenStream"]; !slices.Equal(got, []string{listen(p)}) {
			t.Errorf("lodis@%d.socket: ListenStream %q, want [%s]", p, got, listen(p))
		}
		if got, want := eff["Socket"]["Service"], []string{fmt.Sprintf("lodis@%d.service", p)}; !slices.Equal(got, want) {
			t.Errorf("lodis@%d.socket: Service= %q, want %q", p, got, want)
		}
	}
}

// TestNixFilesParse parses every .nix file of the tree.
func TestNixFilesParse(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(repo, "nix", "*.nix"))
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, filepath.Join(repo, "flake.nix"))
	for _, want := range []string{"package.nix", "module.nix", "test.nix", "lib-stub.nix", "eval-module.nix", "eval-nixos.nix", "stand-in-pkgs.nix", "hive.nix"} {
		if !slices.Contains(files, filepath.Join(repo, "nix", want)) {
			t.Errorf("nix/%s is missing", want)
		}
	}
	for _, f := range files {
		var stderr bytes.Buffer
		c := nixCmd(context.Background(), t, "nix-instantiate", "--parse", f)
		c.Stdout, c.Stderr = nil, &stderr
		if err := c.Run(); err != nil {
			t.Errorf("%s does not parse: %v: %s", f, err, stderr.String())
		}
	}
}

// TestVendorHash checks nix/package.nix's vendorHash against the hash of
// `go mod vendor` for the current go.mod/go.sum (make nix-vendor-hash).
func TestVendorHash(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repo, "nix", "package.nix"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`vendorHash = "(sha256-[A-Za-z0-9+/=]+)";`).FindSubmatch(b)
	if m == nil {
		t.Fatal(`nix/package.nix has no vendorHash = "sha256-...";`)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	c := nixCmd(ctx, t, "make", "-s", "nix-vendor-hash")
	c.Stdout, c.Stderr = &stdout, &stderr
	if err := c.Run(); err != nil {
		t.Fatalf("make nix-vendor-hash: %v: %s", err, stderr.String())
	}
	if got := strings.TrimSpace(stdout.String()); got != string(m[1]) {
		t.Errorf("nix/package.nix has vendorHash %s, but go.mod/go.sum give %s: put that in nix/package.nix", m[1], got)
	}
}

// TestModuleDefaults evaluates `services.lodis.enable = true;` alone: ten
// ports 8080..8089 listening on every address, app.conf naming the default
// app as units/lodis-worker.conf has it, the workers as the package's units
// with the generator's drop-in make them, the lodis user of
// units/lodis.sysusers, the package's tmpfiles with current at its binary.
func TestModuleDefaults(t *testing.T) {
	pkg := installPackage(t, lodisBinary(t))
	r, err := eval(t, lodis(map[string]any{"enable": true}), pkg)
	if err != nil {
		t.Fatal(err)
	}
	var ports []int
	for p := 8080; p <= 8089; p++ {
		ports = append(ports, p)
	}
	checkSockets(t, r, ports, func(p int) string { return fmt.Sprint(p) })

	if _, ok := r.Systemd.Services["lodis@"]; ok {
		t.Errorf("with default settings the module overrides lodis@.service: %+v", r.Systemd.Services["lodis@"])
	}
	_, args := workerCommand(t, pkg)
	text := r.Environment.Etc["lodis/app.conf"].Text
	if want := appConfHeader + "APP_ARGS=" + strings.Join(args, " ") + "\n"; text != want {
		t.Errorf("app.conf:\n%s\nwant the default app of units/lodis-worker.conf:\n%s", text, want)
	}
	gen := runGenerator(t, filepath.Join(pkg, "lib", "systemd", "system-generators", "lodis-generator"), text)
	checkWorkers(t, pkg, gen, args)
	checkSandboxKept(t, pkg, gen)
	if !slices.Equal(r.Systemd.Packages, []string{pkg}) {
		t.Errorf("systemd.packages %q, want the lodis package [%s]", r.Systemd.Packages, pkg)
	}
	if r.Nginx != nil || len(r.Networking.Firewall.AllowedTCPPorts) > 0 {
		t.Errorf("nginx %+v, firewall %v: want neither by default", r.Nginx, r.Networking.Firewall.AllowedTCPPorts)
	}

	checkUser(t, r)
	if len(r.Systemd.TmpfilesScripts) != 1 {
		t.Fatalf("tmpfiles packages: %d scripts, want one", len(r.Systemd.TmpfilesScripts))
	}
	tmpfilesCurrent(t, r.Systemd.TmpfilesScripts[0], pkg, filepath.Join(pkg, "bin", "lodis"))
}

// checkSandboxKept: each worker template, with the generator's drop-in from
// genDir, keeps every setting of the package's 10-worker.conf that the
// drop-in does not set (the sandbox, the bounds), and has the hardening.
func checkSandboxKept(t *testing.T, pkg, genDir string) {
	t.Helper()
	for _, tmpl := range units.WorkerTemplates {
		b, err := os.ReadFile(filepath.Join(genDir, tmpl+".d", appconf.DropInName))
		if err != nil {
			t.Fatal(err)
		}
		set := dropinLines(t, tmpl, string(b))["Service"]
		base := mustUnit(t, tmpl)
		worker, err := os.ReadFile(filepath.Join(pkg, "lib", "systemd", "system", tmpl+".d", units.WorkerDropIn))
		if err != nil {
			t.Fatal(err)
		}
		for section, kv := range dropinLines(t, tmpl, string(worker)) {
			base = base.withDropin(section, kv)
		}
		base = base.instance("18505")
		eff := workerUnit(t, pkg, genDir, tmpl, "18505")
		for k, v := range base["Service"] {
			if _, ok := set[k]; !ok && !reflect.DeepEqual(eff["Service"][k], v) {
				t.Errorf("%s %s=%q, the package's %s has %q", tmpl, k, eff["Service"][k], units.WorkerDropIn, v)
			}
		}
		for _, k := range []string{"DynamicUser", "ProtectSystem", "NoNewPrivileges", "CapabilityBoundingSet", "SystemCallFilter", "PrivateUsers", "RestrictAddressFamilies"} {
			if _, ok := eff["Service"][k]; !ok {
				t.Errorf("%s has no %s=", tmpl, k)
			}
		}
	}
}

// checkUser compares users.users with units/lodis.sysusers.
func checkUser(t *testing.T, r *evalResult) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repo, "units", "lodis.sysusers"))
	if err != nil {
		t.Fatal(err)
	}
	line := regexp.MustCompile(`(?m)^u\s+(\S+)\s+(\S+)\s+"([^"]*)"\s+(\S+)`).FindSubmatch(b)
	if line == nil {
		t.Fatal(`units/lodis.sysusers has no line u NAME ID "GECOS" HOME`)
	}
	name, gecos, home := string(line[1]), string(line[3]), string(line[4])
	u, ok := r.Users.Users[name]
	if !ok {
		t.Fatalf("users.users has no %s (units/lodis.sysusers creates it): %+v", name, r.Users.Users)
	}
	if !u.IsSystemUser || u.Group != name || u.Home != home || u.Description != gecos {
		t.Errorf("users.users.%s = %+v, want a system user in group %s, home %s, description %q", name, u, name, home, gecos)
	}
	if _, ok := r.Users.Groups[name]; !ok {
		t.Errorf("users.groups has no %s", name)
	}
}

// TestModuleSettings sets every option and compares the resulting units with
// units/: ports, ListenStream, the default app's arguments (idleTimeout and
// extraArgs) in app.conf and from there in both workers' ExecStart, every
// other worker setting (the hardening) left as units/ has it.
func TestModuleSettings(t *testing.T) {
	pkg := installPackage(t, lodisBinary(t))
	r, err := eval(t, lodis(map[string]any{
		"enable": true, "ports": []int{18450, 18451}, "listenAddress": "127.0.0.1",
		"idleTimeout": "45s", "extraArgs": []string{"--log-level", "debug"},
		"openFirewall": true, "nginx": map[string]any{"enable": true},
	}), pkg)
	if err != nil {
		t.Fatal(err)
	}
	checkSockets(t, r, []int{18450, 18451}, func(p int) string { return fmt.Sprintf("127.0.0.1:%d", p) })

	if d, ok := r.Systemd.Services["lodis@"]; ok {
		t.Errorf("the module overrides lodis@.service (%+v): the arguments reach both workers through app.conf", d)
	}
	_, args := workerCommand(t, pkg)
	args = append(args, "--idle-timeout", "45s", "--log-level", "debug")
	text := r.Environment.Etc["lodis/app.conf"].Text
	if got := checkAppConf(t, text).Args; !slices.Equal(got, args) {
		t.Errorf("app.conf gives the app %q, want %q:\n%s", got, args, text)
	}
	gen := runGenerator(t, filepath.Join(pkg, "lib", "systemd", "system-generators", "lodis-generator"), text)
	checkWorkers(t, pkg, gen, args)
	checkSandboxKept(t, pkg, gen)

	if got := r.Networking.Firewall.AllowedTCPPorts; !slices.Equal(got, []int{18450, 18451}) {
		t.Errorf("firewall ports %v, want [18450 18451]", got)
	}
	checkNginx(t, r, "127.0.0.1:18450", "127.0.0.1:18451")
}

func checkNginx(t *testing.T, r *evalResult, servers ...string) {
	t.Helper()
	if r.Nginx == nil || !r.Nginx.Enable {
		t.Fatalf("nginx not enabled: %+v", r.Nginx)
	}
	var got []string
	for s := range r.Nginx.Upstreams["lodis"].Servers {
		got = append(got, s)
	}
	sort.Strings(got)
	if !slices.Equal(got, servers) {
		t.Errorf("nginx upstream lodis: %q, want %q", got, servers)
	}
	if p := r.Nginx.VirtualHosts["lodis"].Locations["/"].ProxyPass; p != "http://lodis" {
		t.Errorf("nginx virtual host lodis proxies to %q, want http://lodis", p)
	}
}

// TestModuleListenAddress covers the address forms: IPv4, IPv6 and the
// wildcards, which nginx reaches on loopback.
func TestModuleListenAddress(t *testing.T) {
	for _, tc := range []struct{ addr, listen, upstream string }{
		{"::1", "[::1]:18460", "[::1]:18460"},
		{"::", "[::]:18460", "[::1]:18460"},
		{"0.0.0.0", "0.0.0.0:18460", "127.0.0.1:18460"},
		{"192.0.2.7", "192.0.2.7:18460", "192.0.2.7:18460"},
	} {
		t.Run(tc.addr, func(t *testing.T) {
			r := mustEval(t, lodis(map[string]any{"enable": true, "ports": []int{18460}, "listenAddress": tc.addr, "nginx": map[string]any{"enable": true}}))
			checkSockets(t, r, []int{18460}, func(int) string { return tc.listen })
			checkNginx(t, r, tc.upstream)
		})
	}
}

// TestModuleDisabled: without enable the module sets nothing.
func TestModuleDisabled(t *testing.T) {
	for _, cfg := range []any{map[string]any{}, lodis(map[string]any{"enable": false, "nginx": map[string]any{"enable": true}})} {
		r := mustEval(t, cfg)
		if len(r.Systemd.Sockets)+len(r.Systemd.Services)+len(r.Systemd.Paths)+len(r.Systemd.Packages) > 0 || len(r.Users.Users) > 0 || r.Nginx != nil {
			t.Errorf("disabled module with %v sets %+v", cfg, r)
		}
	}
}

// TestModuleRejectsBadInput expects a clear error for each bad setting,
// worded as nixpkgs' lib words it (badInputs).
func TestModuleRejectsBadInput(t *testing.T) {
	for _, tc := range badInputs() {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // each evaluation is one single-threaded nix-instantiate
			tc.settings["enable"] = true
			_, err := eval(t, lodis(tc.settings), "")
			if err == nil {
				t.Fatalf("%v accepted, want an error saying %q", tc.settings, tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("got %v\nwant an error saying %q", err, w)
				}
			}
		})
	}
}

// TestModuleSupervisorAndUpgrade: enabled, the supervisor and the upgrade
// watcher are wanted as their unit's [Install] says, when units/ has them;
// until then the module warns instead of inventing a unit.
func TestModuleSupervisorAndUpgrade(t *testing.T) {
	for _, tc := range []struct {
		option, unit, name string
		defs               func(r *evalResult) map[string]unitDef
	}{
		{"supervisor", "lodis-supervisor.service", "lodis-supervisor", func(r *evalResult) map[string]unitDef { return r.Systemd.Services }},
		{"upgrade", "lodis-upgrade.path", "lodis-upgrade", func(r *evalResult) map[string]unitDef { return r.Systemd.Paths }},
	} {
		t.Run(tc.option, func(t *testing.T) {
			_, statErr := os.Stat(filepath.Join(repo, "units", tc.unit))
			present := statErr == nil
			on := mustEval(t, lodis(map[string]any{"enable": true, tc.option: map[string]any{"enable": true}}))
			d, ok := tc.defs(on)[tc.name]
			warned := slices.ContainsFunc(on.Warnings, func(w string) bool { return strings.Contains(w, tc.unit) })
			if present {
				want := mustUnit(t, tc.unit).wantedBy()
				if !ok || d.OverrideStrategy != "asDropin" || !slices.Equal(d.WantedBy, want) || len(want) == 0 {
					t.Errorf("%s: module sets %+v (present %v), want a drop-in wanted by %q (its [Install] WantedBy)", tc.unit, d, ok, want)
				}
				if warned {
					t.Errorf("warning about %s although units/ has it: %q", tc.unit, on.Warnings)
				}
			} else {
				if ok {
					t.Errorf("units/ has no %s, yet the module sets %+v", tc.unit, d)
				}
				if !warned {
					t.Errorf("units/ has no %s and the module does not warn: %q", tc.unit, on.Warnings)
				}
			}
			off := mustEval(t, lodis(map[string]any{"enable": true, tc.option: map[string]any{"enable": false}}))
			if _, ok := tc.defs(off)[tc.name]; ok || len(off.Warnings) > 0 && slices.ContainsFunc(off.Warnings, func(w string) bool { return strings.Contains(w, tc.unit) }) {
				t.Errorf("%s.enable = false still sets %s or warns: %+v", tc.option, tc.unit, off.Warnings)
			}
		})
	}
}
