package nixos

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
)

// These tests evaluate nix/module.nix inside a real NixOS evaluation
// (nixpkgs' lib/ and nixos/ modules, nix/eval-nixos.nix) and check what
// NixOS would install: the units and their drop-ins, polkit, the firewall,
// nginx, the user, and the errors for bad settings, worded by the real lib.

// checkRealSockets: one socket drop-in per port, wanted as units/ says, and
// the template with it listens on listen(port) and activates its worker.
func checkRealSockets(t *testing.T, m *nixosMachine, ports []int, listen func(int) string) {
	t.Helper()
	var got, want []string
	for n := range m.Units {
		if strings.HasSuffix(n, ".socket") && strings.HasPrefix(n, "lodis@") {
			got = append(got, n)
		}
	}
	for _, p := range ports {
		want = append(want, fmt.Sprintf("lodis@%d.socket", p))
	}
	sort.Strings(got)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Fatalf("NixOS socket units %q, want %q", got, want)
	}
	tmpl := mustUnit(t, "lodis@.socket")
	for _, p := range ports {
		name := fmt.Sprintf("lodis@%d.socket", p)
		d := m.Units[name]
		if !d.Enable || !slices.Equal(d.WantedBy, tmpl.wantedBy()) {
			t.Errorf("%s: enable %v, wantedBy %q; want enabled and wanted by units/lodis@.socket's WantedBy %q", name, d.Enable, d.WantedBy, tmpl.wantedBy())
		}
		eff := effective(t, "lodis@.socket", d).instance(fmt.Sprint(p))
		if got := eff["Socket"]["ListenStream"]; !slices.Equal(got, []string{listen(p)}) {
			t.Errorf("%s: ListenStream %q, want [%s]", name, got, listen(p))
		}
		if got, want := eff["Socket"]["Service"], []string{fmt.Sprintf("lodis@%d.service", p)}; !slices.Equal(got, want) {
			t.Errorf("%s: Service= %q, want %q", name, got, want)
		}
	}
}

// checkPackaged: the package is both a unit package (its units/ are what
// NixOS links) and a system package, whose polkit rule NixOS's polkit
// module links into /run/current-system/sw/share/polkit-1, the directory
// NixOS's polkitd reads rules from; and polkit is on.
func checkPackaged(t *testing.T, m *nixosMachine, pkg string) {
	t.Helper()
	if !slices.Contains(m.SystemdPackages, pkg) {
		t.Errorf("systemd.packages %q lacks the lodis package %s", m.SystemdPackages, pkg)
	}
	units, err := filepath.Glob(filepath.Join(repo, "units", "*.s*"))
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range units {
		if strings.HasSuffix(u, ".sysusers") {
			continue
		}
		if _, err := os.Stat(filepath.Join(pkg, "lib", "systemd", "system", filepath.Base(u))); err != nil {
			t.Errorf("the package has no unit %s for systemd.packages: %v", filepath.Base(u), err)
		}
	}

	if !m.Polkit.Enable {
		t.Error("security.polkit.enable is false: the supervisor (User=lodis) could not act on any unit")
	}
	if _, ok := m.Units["polkit.service"]; !ok {
		t.Error("no polkit.service")
	}
	if !slices.Contains(m.SystemPackages, pkg) {
		t.Errorf("environment.systemPackages lacks the lodis package %s: its polkit rule is not in the system path", pkg)
	}
	if !slices.Contains(m.PathsToLink, "/share/polkit-1") {
		t.Errorf("environment.pathsToLink %q lacks /share/polkit-1: the package's rule would not be linked", m.PathsToLink)
	}
	want, err := os.ReadFile(filepath.Join(repo, "packaging", "polkit", "50-lodis.rules"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(pkg, "share", "polkit-1", "rules.d", "50-lodis.rules"))
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("the package's share/polkit-1/rules.d/50-lodis.rules is not packaging/polkit/50-lodis.rules (%v)", err)
	}
	// A rule of the same name in /etc would shadow the package's.
	for n, e := range m.Polkit.Etc {
		if strings.Contains(n, "lodis") {
			t.Errorf("environment.etc.%q = %+v: the rule comes from the package", n, e)
		}
	}
}

// checkRealSupervisor: the supervisor's drop-in wants it as units/ says and
// changes nothing of units/lodis-supervisor.service but what NixOS adds to
// every service (Environment=) and allow (IPAddressAllow=, extra addresses).
func checkRealSupervisor(t *testing.T, m *nixosMachine, allow []string) {
	t.Helper()
	d, ok := m.Units["lodis-supervisor.service"]
	if !ok {
		t.Fatal("no lodis-supervisor.service")
	}
	base := mustUnit(t, "lodis-supervisor.service")
	if !d.Enable || !slices.Equal(d.WantedBy, base.wantedBy()) {
		t.Errorf("lodis-supervisor.service: enable %v, wantedBy %q, want wanted by %q", d.Enable, d.WantedBy, base.wantedBy())
	}
	eff := effective(t, "lodis-supervisor.service", d)
	for k, v := range base["Service"] {
		switch k {
		case "Environment":
			if !isPrefix(v, eff["Service"][k]) {
				t.Errorf("supervisor Environment= %q no longer starts with units/'s %q", eff["Service"][k], v)
			}
		case "IPAddressAllow":
			if want := append(slices.Clone(v), allow...); !slices.Equal(eff["Service"][k], want) {
				t.Errorf("supervisor IPAddressAllow= %q, want %q", eff["Service"][k], want)
			}
		default:
			if !reflect.DeepEqual(eff["Service"][k], v) {
				t.Errorf("supervisor %s=%q, units/ has %q", k, eff["Service"][k], v)
			}
		}
	}
	if got := eff["Service"]["User"]; !slices.Equal(got, []string{"lodis"}) {
		t.Errorf("supervisor User=%q, want lodis (the polkit rule's subject)", got)
	}
}

func isPrefix(prefix, list []string) bool {
	return len(list) >= len(prefix) && slices.Equal(list[:len(prefix)], prefix)
}

func checkRealNginx(t *testing.T, m *nixosMachine, servers ...string) {
	t.Helper()
	if !m.Nginx.Enable {
		t.Fatal("nginx not enabled")
	}
	if _, ok := m.Units["nginx.service"]; !ok {
		t.Error("no nginx.service")
	}
	var got []string
	for s := range m.Nginx.Upstreams["lodis"].Servers {
		got = append(got, s)
	}
	sort.Strings(got)
	sort.Strings(servers)
	if !slices.Equal(got, servers) {
		t.Errorf("nginx upstream lodis: %q, want %q", got, servers)
	}
	if p := m.Nginx.VirtualHosts["lodis"].Locations["/"].ProxyPass; p == nil || *p != "http://lodis" {
		t.Errorf("nginx virtual host lodis proxies to %v, want http://lodis", p)
	}
}

// TestNixOSDefaults: `services.lodis.enable = true;` alone, in a real
// NixOS: ten sockets on every address, the supervisor with polkit and the
// package's rule, app.conf naming the default app, the workers as the
// package's units and the generator (linked by NixOS) make them, current at
// the package's binary, the lodis user, no firewall or nginx change, no
// warning.
func TestNixOSDefaults(t *testing.T) {
	snap := needSnapshot(t)
	pkg := installPackage(t, lodisBinary(t))
	m := mustMachine(t, snap, lodis(map[string]any{"enable": true}), pkg)

	var ports []int
	for p := 8080; p <= 8089; p++ {
		ports = append(ports, p)
	}
	checkRealSockets(t, m, ports, func(p int) string { return fmt.Sprint(p) })
	checkRealSupervisor(t, m, nil)
	checkPackaged(t, m, pkg)
	for _, u := range []string{"lodis@.service", "lodis-alt@.service"} {
		if d, ok := m.Units[u]; ok {
			t.Errorf("with default settings NixOS overrides %s: %q", u, d.Text)
		}
	}
	if m.AppConf == nil {
		t.Fatal("no /etc/lodis/app.conf")
	}
	_, args := workerCommand(t, pkg)
	if want := appConfHeader + "APP_ARGS=" + strings.Join(args, " ") + "\n"; m.AppConf.Text != want {
		t.Errorf("app.conf:\n%s\nwant the default app of units/lodis-worker.conf:\n%s", m.AppConf.Text, want)
	}
	gen := runGenerator(t, filepath.Join(nixosGenerators(t, m, pkg), "lodis-generator"), m.AppConf.Text)
	checkWorkers(t, pkg, gen, args)
	checkSandboxKept(t, pkg, gen)
	if len(m.TmpfilesScripts) != 1 {
		t.Fatalf("tmpfiles packages: %d lodis scripts, want one", len(m.TmpfilesScripts))
	}
	tmpfilesCurrent(t, m.TmpfilesScripts[0], pkg, filepath.Join(pkg, "bin", "lodis"))
	if _, ok := m.Units["lodis-upgrade.path"]; ok {
		t.Error("lodis-upgrade.path is wanted although upgrade.enable defaults to false")
	}
	if slices.ContainsFunc(m.Firewall.AllowedTCPPorts, func(p int) bool { return p >= 8080 && p <= 8089 }) {
		t.Errorf("firewall opens %v without openFirewall", m.Firewall.AllowedTCPPorts)
	}
	if m.Nginx.Enable {
		t.Error("nginx enabled without nginx.enable")
	}
	if u := m.Users.Lodis; u == nil || !u.IsSystemUser || u.Group != "lodis" || u.Home != "/var/lib/lodis" || !slices.Contains(m.Users.Groups, "lodis") {
		t.Errorf("users.users.lodis = %+v, groups %q: want a system user lodis in group lodis, home /var/lib/lodis", u, m.Users.Groups)
	}
	if len(m.Warnings) > 0 {
		t.Errorf("warnings: %q", m.Warnings)
	}
}

// TestNixOSSettings sets every option on loopback in a real NixOS: the
// sockets listen there, the default app's arguments reach both workers
// through app.conf and the generator, the upgrade watcher is wanted, the
// firewall opens the ports and nginx balances over them.
func TestNixOSSettings(t *testing.T) {
	snap := needSnapshot(t)
	pkg := installPackage(t, lodisBinary(t))
	m := mustMachine(t, snap, lodis(map[string]any{
		"enable": true, "ports": []int{18500, 18501}, "listenAddress": "127.0.0.1",
		"idleTimeout": "45s", "extraArgs": []string{"--log-level", "debug"},
		"upgrade": map[string]any{"enable": true}, "openFirewall": true,
		"nginx": map[string]any{"enable": true},
	}), pkg)

	checkRealSockets(t, m, []int{18500, 18501}, func(p int) string { return fmt.Sprintf("127.0.0.1:%d", p) })
	checkRealSupervisor(t, m, nil) // loopback: the unit allows it already
	checkPackaged(t, m, pkg)

	if d, ok := m.Units["lodis@.service"]; ok {
		t.Errorf("NixOS overrides lodis@.service (%q): the arguments reach both workers through app.conf", d.Text)
	}
	if m.AppConf == nil {
		t.Fatal("no /etc/lodis/app.conf")
	}
	_, args := workerCommand(t, pkg)
	args = append(args, "--idle-timeout", "45s", "--log-level", "debug")
	if got := checkAppConf(t, m.AppConf.Text).Args; !slices.Equal(got, args) {
		t.Errorf("app.conf gives the app %q, want %q:\n%s", got, args, m.AppConf.Text)
	}
	gen := runGenerator(t, filepath.Join(nixosGenerators(t, m, pkg), "lodis-generator"), m.AppConf.Text)
	checkWorkers(t, pkg, gen, args)
	checkSandboxKept(t, pkg, gen)

	up, ok := m.Units["lodis-upgrade.path"]
	if want := mustUnit(t, "lodis-upgrade.path").wantedBy(); !ok || up.OverrideStrategy != "asDropin" || !slices.Equal(up.WantedBy, want) {
		t.Errorf("lodis-upgrade.path: %+v (present %v), want a drop-in wanted by %q", up, ok, want)
	}
	if got := m.Firewall.AllowedTCPPorts; !slices.Contains(got, 18500) || !slices.Contains(got, 18501) || !m.Firewall.Enable {
		t.Errorf("firewall (enabled %v) opens %v, want 18500 and 18501", m.Firewall.Enable, got)
	}
	checkRealNginx(t, m, "127.0.0.1:18500", "127.0.0.1:18501")
	if len(m.Warnings) > 0 {
		t.Errorf("warnings: %q", m.Warnings)
	}
}

// TestNixOSListenAddress: the ports listen on the address given, nginx
// reaches them there (loopback for the wildcards), and the supervisor,
// whose unit allows loopback only, is allowed to probe a port on any other
// address.
func TestNixOSListenAddress(t *testing.T) {
	snap := needSnapshot(t)
	pkg := installedPackage(t)
	for _, tc := range []struct {
		addr, listen, upstream string
		allow                  []string
	}{
		{"127.0.0.1", "127.0.0.1:18510", "127.0.0.1:18510", nil},
		{"::1", "[::1]:18510", "[::1]:18510", nil},
		{"::", "[::]:18510", "[::1]:18510", nil},
		{"0.0.0.0", "0.0.0.0:18510", "127.0.0.1:18510", nil},
		{"10.0.0.2", "10.0.0.2:18510", "10.0.0.2:18510", []string{"10.0.0.2"}},
		{"fd00::2", "[fd00::2]:18510", "[fd00::2]:18510", []string{"fd00::2"}},
	} {
		t.Run(tc.addr, func(t *testing.T) {
			m := mustMachine(t, snap, lodis(map[string]any{"enable": true, "ports": []int{18510}, "listenAddress": tc.addr, "nginx": map[string]any{"enable": true}}), pkg)
			checkRealSockets(t, m, []int{18510}, func(int) string { return tc.listen })
			checkRealSupervisor(t, m, tc.allow)
			checkRealNginx(t, m, tc.upstream)
		})
	}
}

// TestNixOSNginxUpstreamHosts: nginx balances over the same ports on every
// host listed (IPv6 in brackets), and only over them.
func TestNixOSNginxUpstreamHosts(t *testing.T) {
	snap := needSnapshot(t)
	pkg := installedPackage(t)
	m := mustMachine(t, snap, lodis(map[string]any{
		"enable": true, "ports": []int{18520, 18521}, "listenAddress": "10.0.0.2",
		"nginx": map[string]any{"enable": true, "upstreamHosts": []string{"10.0.0.2", "fd00::3", "web3.internal"}},
	}), pkg)
	checkRealNginx(t, m, "10.0.0.2:18520", "10.0.0.2:18521", "[fd00::3]:18520", "[fd00::3]:18521", "web3.internal:18520", "web3.internal:18521")
}

// TestNixOSWithoutSupervisor: supervisor.enable = false wants no supervisor
// and leaves polkit as the rest of the configuration has it (off).
func TestNixOSWithoutSupervisor(t *testing.T) {
	snap := needSnapshot(t)
	pkg := installedPackage(t)
	m := mustMachine(t, snap, lodis(map[string]any{"enable": true, "ports": []int{18530}, "supervisor": map[string]any{"enable": false}}), pkg)
	if d, ok := m.Units["lodis-supervisor.service"]; ok {
		t.Errorf("supervisor.enable = false, yet NixOS has lodis-supervisor.service: %q", d.Text)
	}
	if m.Polkit.Enable {
		t.Error("polkit turned on although nothing of lodis needs it")
	}
	checkRealSockets(t, m, []int{18530}, func(p int) string { return fmt.Sprint(p) })
}

// TestNixOSDisabled: a NixOS with the module imported but not enabled has
// no lodis unit, user or package.
func TestNixOSDisabled(t *testing.T) {
	snap := needSnapshot(t)
	pkg := installedPackage(t)
	m := mustMachine(t, snap, lodis(map[string]any{"enable": false, "nginx": map[string]any{"enable": true}}), pkg)
	for n := range m.Units {
		if strings.HasPrefix(n, "lodis") {
			t.Errorf("disabled module: NixOS has %s", n)
		}
	}
	if m.Users.Lodis != nil || slices.Contains(m.SystemPackages, pkg) || slices.Contains(m.SystemdPackages, pkg) || m.Nginx.Enable {
		t.Errorf("disabled module: user %+v, packages %v, nginx %v", m.Users.Lodis, slices.Contains(m.SystemPackages, pkg), m.Nginx.Enable)
	}
}

// TestNixOSRejectsBadInput: each bad setting fails the real evaluation
// with the real lib's words (badInputs, which the stub must word alike).
func TestNixOSRejectsBadInput(t *testing.T) {
	snap := needSnapshot(t)
	pkg := installedPackage(t)
	for _, tc := range badInputs() {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // each evaluation is one single-threaded nix-instantiate
			tc.settings["enable"] = true
			_, err := nixosEval(t, snap, lodis(tc.settings), "", pkg)
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
