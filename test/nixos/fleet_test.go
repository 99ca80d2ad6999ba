package nixos

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"testing"
)

// fleetFiles are the files of docs/fleet.md's NixOS example: each fenced
// block whose first comment line names a file ("# hive.nix: ...").
func fleetFiles(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repo, "docs", "fleet.md"))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	block := regexp.MustCompile("(?ms)^```(nix|sh)\n(.*?)^```")
	name := regexp.MustCompile(`(?m)^# ([a-z.-]+\.(?:nix|sh)):`)
	for _, m := range block.FindAllStringSubmatch(string(b), -1) {
		if n := name.FindStringSubmatch(m[2]); n != nil {
			files[n[1]] = m[2]
		}
	}
	for _, want := range []string{"release.nix", "hive.nix", "roll.sh"} {
		if _, ok := files[want]; !ok {
			t.Fatalf("docs/fleet.md has no block for %s (a fenced block starting with '# %s: ...')", want, want)
		}
	}
	return files
}

// TestFleetHive evaluates docs/fleet.md's colmena hive, as written, node by
// node with NixOS's modules: each web host listens on its own address, its
// supervisor may probe there and has polkit, its nginx balances over every
// host's ports, the firewall lets them in, one host is the canary; and
// roll.sh is valid bash that rolls the canary first and then every other
// node, at the addresses the hive gives them.
func TestFleetHive(t *testing.T) {
	files := fleetFiles(t)

	dir := t.TempDir()
	for n, text := range files {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command("bash", "-n", filepath.Join(dir, "roll.sh")).CombinedOutput(); err != nil {
		t.Errorf("roll.sh is not valid bash: %v: %s", err, out)
	}

	snap := needSnapshot(t)
	pkg := installedPackage(t)
	nodes, err := nixosEval(t, snap, nil, filepath.Join(dir, "hive.nix"), pkg)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for n := range nodes {
		names = append(names, n)
	}
	sort.Strings(names)
	if len(names) < 2 {
		t.Fatalf("hive nodes %q: a canary and at least one more", names)
	}

	var canaries, servers []string
	for _, n := range names {
		m := nodes[n]
		if m.Deployment == nil || m.Deployment.TargetHost == "" {
			t.Fatalf("node %s has no deployment.targetHost", n)
		}
		if slices.Contains(m.Deployment.Tags, "canary") {
			canaries = append(canaries, n)
		}
		for _, p := range m.Lodis.Ports {
			servers = append(servers, fmt.Sprintf("%s:%d", m.Deployment.TargetHost, p))
		}
	}
	if len(canaries) != 1 {
		t.Errorf("canary nodes %q, want one", canaries)
	}

	for _, n := range names {
		t.Run(n, func(t *testing.T) {
			m := nodes[n]
			addr := m.Deployment.TargetHost
			if !m.Lodis.Enable || m.Lodis.ListenAddress == nil || *m.Lodis.ListenAddress != addr {
				t.Errorf("services.lodis: %+v, want enabled, listening on %s", m.Lodis, addr)
			}
			if m.Lodis.Package != pkg {
				t.Errorf("services.lodis.package %s, want release.nix's package %s", m.Lodis.Package, pkg)
			}
			checkRealSockets(t, m, m.Lodis.Ports, func(p int) string { return fmt.Sprintf("%s:%d", addr, p) })
			checkRealSupervisor(t, m, []string{addr})
			checkPackaged(t, m, pkg)
			if _, ok := m.Units["lodis-upgrade.path"]; !ok {
				t.Error("no lodis-upgrade.path: roll.sh's drop would wait for nothing")
			}
			checkRealNginx(t, m, servers...)
			for _, p := range append([]int{80}, m.Lodis.Ports...) {
				if !slices.Contains(m.Firewall.AllowedTCPPorts, p) {
					t.Errorf("firewall opens %v, not %d", m.Firewall.AllowedTCPPorts, p)
				}
			}
			if len(m.Warnings) > 0 {
				t.Errorf("warnings: %q", m.Warnings)
			}
		})
	}

	// roll.sh: `roll NODE ADDRESS` for the canary, then `for host in "NODE
	// ADDRESS" ...; do roll $host` for the others.
	var rolled, rolledAt []string
	script := files["roll.sh"]
	for _, m := range regexp.MustCompile(`(?m)^roll (\S+) (\S+)`).FindAllStringSubmatch(script, -1) {
		rolled, rolledAt = append(rolled, m[1]), append(rolledAt, m[2])
	}
	if loop := regexp.MustCompile(`(?m)^for host in (.*); do\n\s+roll \$host\n`).FindStringSubmatch(script); loop != nil {
		for _, m := range regexp.MustCompile(`"(\S+) (\S+)"`).FindAllStringSubmatch(loop[1], -1) {
			rolled, rolledAt = append(rolled, m[1]), append(rolledAt, m[2])
		}
	}
	if len(rolled) == 0 || len(canaries) == 1 && rolled[0] != canaries[0] {
		t.Errorf("roll.sh rolls %q; want the canary %q first", rolled, canaries)
	}
	if got := slices.Sorted(slices.Values(rolled)); !slices.Equal(got, names) {
		t.Errorf("roll.sh rolls %q; the hive's nodes are %q, each once", rolled, names)
	}
	for i, n := range rolled {
		if m, ok := nodes[n]; ok && m.Deployment.TargetHost != rolledAt[i] {
			t.Errorf("roll.sh reaches %s at %s; the hive deploys it to %s", n, rolledAt[i], m.Deployment.TargetHost)
		}
	}
}
