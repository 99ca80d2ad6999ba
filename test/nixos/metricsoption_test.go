package nixos

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// metricsSocket is the unit services.lodis.metrics turns on.
const metricsSocket = "lodis-metrics.socket"

// hasMetricsSocket tells whether units/ has lodis-metrics.socket yet.
func hasMetricsSocket(t *testing.T) bool {
	t.Helper()
	_, err := os.Stat(filepath.Join(repo, "units", metricsSocket))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return err == nil
}

// TestModuleMetricsOption checks services.lodis.metrics with the stub lib:
// off by default on 127.0.0.1:9187; on, lodis-metrics.socket wanted as its
// [Install] says and listening where it is told when units/ has it, and
// else a warning naming the unit and the address, with no unit invented;
// the firewall opened only when asked and enabled.
func TestModuleMetricsOption(t *testing.T) {
	present := hasMetricsSocket(t)
	def := mustEval(t, lodis(map[string]any{"enable": true, "ports": []int{18541}}))
	m, _ := def.Lodis["metrics"].(map[string]any)
	if m["enable"] != false || m["listenAddress"] != "127.0.0.1" || m["port"] != float64(9187) || m["openFirewall"] != false {
		t.Errorf("services.lodis.metrics defaults %v, want off, 127.0.0.1, 9187, firewall closed", m)
	}
	if _, ok := def.Systemd.Sockets["lodis-metrics"]; ok || slices.ContainsFunc(def.Warnings, func(w string) bool { return strings.Contains(w, "metrics") }) {
		t.Errorf("metrics off by default, yet socket %v or warnings %q", def.Systemd.Sockets["lodis-metrics"], def.Warnings)
	}

	for _, tc := range []struct {
		name     string
		metrics  map[string]any
		listen   string
		firewall []int
	}{
		{"defaults", map[string]any{"enable": true}, "127.0.0.1:9187", nil},
		{"every IPv6 address, firewall open", map[string]any{"enable": true, "listenAddress": "::", "port": 18540, "openFirewall": true}, "[::]:18540", []int{18540}},
		{"one address", map[string]any{"enable": true, "listenAddress": "10.0.0.2"}, "10.0.0.2:9187", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := mustEval(t, lodis(map[string]any{"enable": true, "ports": []int{18541}, "metrics": tc.metrics}))
			d, ok := r.Systemd.Sockets["lodis-metrics"]
			if present {
				tmpl := mustUnit(t, metricsSocket)
				if !ok || d.OverrideStrategy != "asDropin" || !slices.Equal(d.WantedBy, tmpl.wantedBy()) {
					t.Fatalf("%s: %+v (present %v); want a drop-in wanted by %q", metricsSocket, d, ok, tmpl.wantedBy())
				}
				di := dropin(d.SocketConfig)
				di["ListenStream"] = append(di["ListenStream"], d.ListenStreams...)
				if got := tmpl.withDropin("Socket", di)["Socket"]["ListenStream"]; !slices.Equal(got, []string{tc.listen}) {
					t.Errorf("ListenStream %q, want [%s]", got, tc.listen)
				}
			} else {
				if ok {
					t.Errorf("units/ has no %s, yet the module sets %+v", metricsSocket, d)
				}
				want := "services.lodis.metrics.enable: this lodis source has no lodis-metrics.socket yet: nothing listens on " + tc.listen
				if !slices.Contains(r.Warnings, want) {
					t.Errorf("warnings %q, want %q", r.Warnings, want)
				}
			}
			fw := slices.DeleteFunc(slices.Clone(r.Networking.Firewall.AllowedTCPPorts), func(p int) bool { return p == 18541 })
			if !slices.Equal(fw, tc.firewall) {
				t.Errorf("firewall opens %v, want %v", fw, tc.firewall)
			}
		})
	}

	closed := mustEval(t, lodis(map[string]any{"enable": true, "metrics": map[string]any{"enable": false, "openFirewall": true}}))
	if len(closed.Networking.Firewall.AllowedTCPPorts) > 0 {
		t.Errorf("metrics off with openFirewall: the firewall opens %v", closed.Networking.Firewall.AllowedTCPPorts)
	}
}

// TestNixOSMetricsOption: the same in a real NixOS. With the unit, its
// drop-in as NixOS writes it listens where it is told; without it, NixOS
// warns (nixos-rebuild shows the warning) and has no such unit.
func TestNixOSMetricsOption(t *testing.T) {
	snap := needSnapshot(t)
	pkg := installedPackage(t)
	cfg := lodis(map[string]any{"enable": true, "ports": []int{18542},
		"metrics": map[string]any{"enable": true, "listenAddress": "fd00::5", "port": 18543, "openFirewall": true}})
	if !hasMetricsSocket(t) {
		_, err := nixosEval(t, snap, cfg, "", pkg)
		want := "services.lodis.metrics.enable: this lodis source has no lodis-metrics.socket yet: nothing listens on [fd00::5]:18543"
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want the warning %q", err, want)
		}
		off := mustMachine(t, snap, lodis(map[string]any{"enable": true, "ports": []int{18542}}), pkg)
		if _, ok := off.Units[metricsSocket]; ok || len(off.Warnings) > 0 {
			t.Errorf("metrics off: unit present %v, warnings %q", ok, off.Warnings)
		}
		return
	}
	m := mustMachine(t, snap, cfg, pkg)
	d, ok := m.Units[metricsSocket]
	if !ok {
		t.Fatalf("no %s in the NixOS configuration", metricsSocket)
	}
	base := mustUnit(t, metricsSocket)
	if !d.Enable || !slices.Equal(d.WantedBy, base.wantedBy()) {
		t.Errorf("%s: enable %v, wantedBy %q, want wanted by %q", metricsSocket, d.Enable, d.WantedBy, base.wantedBy())
	}
	if got := effective(t, metricsSocket, d)["Socket"]["ListenStream"]; !slices.Equal(got, []string{"[fd00::5]:18543"}) {
		t.Errorf("ListenStream %q, want [[fd00::5]:18543]", got)
	}
	if !slices.Contains(m.Firewall.AllowedTCPPorts, 18543) || slices.Contains(m.Firewall.AllowedTCPPorts, 18542) {
		t.Errorf("firewall opens %v, want 18543 (metrics) and not 18542", m.Firewall.AllowedTCPPorts)
	}
}
