package nixos

import (
	"slices"
	"strings"
	"testing"
)

// TestModuleMetrics checks services.lodis.metrics with the stub lib: off by
// default; on, lodis-metrics.socket wanted as units/ says, listening where
// it is told (127.0.0.1:9187 by default, IPv6 in brackets), the firewall
// opened only when asked.
func TestModuleMetrics(t *testing.T) {
	tmpl := mustUnit(t, "lodis-metrics.socket")
	for _, tc := range []struct {
		name     string
		metrics  map[string]any
		listen   string // "": no socket
		firewall []int
	}{
		{"off by default", nil, "", nil},
		{"defaults", map[string]any{"enable": true}, "127.0.0.1:9187", nil},
		{"every IPv6 address, firewall open", map[string]any{"enable": true, "listenAddress": "::", "port": 18540, "openFirewall": true}, "[::]:18540", []int{18540}},
		{"one address", map[string]any{"enable": true, "listenAddress": "10.0.0.2"}, "10.0.0.2:9187", nil},
		{"firewall without metrics", map[string]any{"enable": false, "openFirewall": true}, "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			settings := map[string]any{"enable": true, "ports": []int{18541}}
			if tc.metrics != nil {
				settings["metrics"] = tc.metrics
			}
			r := mustEval(t, lodis(settings))
			d, ok := r.Systemd.Sockets["lodis-metrics"]
			if tc.listen == "" {
				if ok {
					t.Fatalf("lodis-metrics.socket set up while metrics are off: %+v", d)
				}
			} else {
				if !ok {
					t.Fatal("no lodis-metrics.socket")
				}
				if d.OverrideStrategy != "asDropin" || !slices.Equal(d.WantedBy, tmpl.wantedBy()) {
					t.Errorf("lodis-metrics.socket: %+v; want a drop-in wanted by %q", d, tmpl.wantedBy())
				}
				di := dropin(d.SocketConfig)
				di["ListenStream"] = append(di["ListenStream"], d.ListenStreams...)
				eff := tmpl.withDropin("Socket", di)
				if got := eff["Socket"]["ListenStream"]; !slices.Equal(got, []string{tc.listen}) {
					t.Errorf("ListenStream %q, want [%s]", got, tc.listen)
				}
				if got := eff["Socket"]["FileDescriptorName"]; !slices.Equal(got, []string{"metrics"}) {
					t.Errorf("FileDescriptorName %q: lodis metrics-proxy looks for the socket named metrics", got)
				}
			}
			fw := slices.DeleteFunc(slices.Clone(r.Networking.Firewall.AllowedTCPPorts), func(p int) bool { return p == 18541 })
			if !slices.Equal(fw, tc.firewall) {
				t.Errorf("firewall opens %v, want %v", fw, tc.firewall)
			}
			for _, w := range r.Warnings {
				if strings.Contains(w, "metrics") {
					t.Errorf("warning: %s", w)
				}
			}
		})
	}
}

// TestNixOSMetrics: the same in a real NixOS evaluation: the socket's
// drop-in as NixOS writes it, applied to units/lodis-metrics.socket,
// listens where it is told; the firewall opens the port; the service it
// activates is the package's, untouched.
func TestNixOSMetrics(t *testing.T) {
	snap := needSnapshot(t)
	pkg := installedPackage(t)
	m := mustMachine(t, snap, lodis(map[string]any{"enable": true, "ports": []int{18542},
		"metrics": map[string]any{"enable": true, "listenAddress": "fd00::5", "port": 18543, "openFirewall": true}}), pkg)
	d, ok := m.Units["lodis-metrics.socket"]
	if !ok {
		t.Fatal("no lodis-metrics.socket in the NixOS configuration")
	}
	base := mustUnit(t, "lodis-metrics.socket")
	if !d.Enable || !slices.Equal(d.WantedBy, base.wantedBy()) {
		t.Errorf("lodis-metrics.socket: enable %v, wantedBy %q, want wanted by %q", d.Enable, d.WantedBy, base.wantedBy())
	}
	eff := effective(t, "lodis-metrics.socket", d)
	if got := eff["Socket"]["ListenStream"]; !slices.Equal(got, []string{"[fd00::5]:18543"}) {
		t.Errorf("ListenStream %q, want [[fd00::5]:18543]", got)
	}
	for _, k := range []string{"FileDescriptorName", "Service"} {
		if !slices.Equal(eff["Socket"][k], base["Socket"][k]) {
			t.Errorf("%s=%q, units/ has %q", k, eff["Socket"][k], base["Socket"][k])
		}
	}
	if _, ok := m.Units["lodis-metrics.service"]; ok {
		t.Error("NixOS overrides lodis-metrics.service: the package's unit should run as it is")
	}
	if !slices.Contains(m.Firewall.AllowedTCPPorts, 18543) || slices.Contains(m.Firewall.AllowedTCPPorts, 18542) {
		t.Errorf("firewall opens %v, want 18543 (metrics) and not 18542 (openFirewall is off)", m.Firewall.AllowedTCPPorts)
	}
	if len(m.Warnings) > 0 {
		t.Errorf("warnings: %q", m.Warnings)
	}
	off := mustMachine(t, snap, lodis(map[string]any{"enable": true, "ports": []int{18542}}), pkg)
	if _, ok := off.Units["lodis-metrics.socket"]; ok {
		t.Error("lodis-metrics.socket is wanted although metrics.enable defaults to false")
	}
}
