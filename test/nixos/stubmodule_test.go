package nixos

import (
	"fmt"
	"slices"
	"testing"
)

// TestModulePolkitAndFleet checks, with the stub lib, what the real
// evaluation checks in full (TestNixOS*): the supervisor brings polkit and
// the package (its rule) into the system, may probe a port on a
// non-loopback listenAddress, and nginx balances over upstreamHosts.
func TestModulePolkitAndFleet(t *testing.T) {
	pkg := t.TempDir()
	r, err := eval(t, lodis(map[string]any{
		"enable": true, "ports": []int{18545, 18546}, "listenAddress": "10.0.0.2",
		"nginx": map[string]any{"enable": true, "upstreamHosts": []string{"10.0.0.2", "fd00::3"}},
	}), pkg)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Security.Polkit.Enable {
		t.Error("security.polkit.enable is not set with the supervisor on")
	}
	if !slices.Contains(r.Environment.SystemPackages, pkg) {
		t.Errorf("environment.systemPackages %q lacks the package %s", r.Environment.SystemPackages, pkg)
	}
	if got := r.Systemd.Services["lodis-supervisor"].ServiceConfig["IPAddressAllow"]; fmt.Sprint(got) != "[10.0.0.2]" {
		t.Errorf("supervisor IPAddressAllow %v, want [10.0.0.2]", got)
	}
	checkNginx(t, r, "10.0.0.2:18545", "10.0.0.2:18546", "[fd00::3]:18545", "[fd00::3]:18546")

	off, err := eval(t, lodis(map[string]any{"enable": true, "listenAddress": "127.0.0.1", "supervisor": map[string]any{"enable": false}}), pkg)
	if err != nil {
		t.Fatal(err)
	}
	if off.Security.Polkit.Enable {
		t.Error("polkit turned on without the supervisor")
	}
	if _, ok := off.Systemd.Services["lodis-supervisor"]; ok {
		t.Error("supervisor drop-in without the supervisor")
	}
}
