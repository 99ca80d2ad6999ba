package supervisor_test

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// The supervisor unit verifies clean, runs as user lodis, and is hardened
// to an exposure of at most 4.0 in systemd-analyze security.
func TestSupervisorUnitHardened(t *testing.T) {
	ctx := context.Background()
	if out, err := m.Output(ctx, "systemd-analyze", "verify", "lodis-supervisor.service"); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	if u := m.Prop(ctx, "lodis-supervisor.service", "User"); u != "lodis" {
		t.Errorf("supervisor runs as %q, want lodis", u)
	}
	out, _ := m.Output(ctx, "systemd-analyze", "security", "--no-pager", "lodis-supervisor.service")
	mm := regexp.MustCompile(`Overall exposure level for lodis-supervisor.service: ([0-9.]+)`).FindStringSubmatch(out)
	if mm == nil {
		t.Fatalf("no exposure level in:\n%s", out)
	}
	score, _ := strconv.ParseFloat(mm[1], 64)
	t.Logf("systemd-analyze security lodis-supervisor.service: %.1f", score)
	if score > 4.0 {
		t.Errorf("exposure %.1f > 4.0", score)
	}
}

// The polkit rule lets user lodis manage lodis@PORT units and nothing else.
func TestPolkitRule(t *testing.T) {
	as := func(args ...string) (int, string) {
		code, _, stderr := runIn(t, append([]string{"runuser", "-u", "lodis", "--", "systemctl", "--no-ask-password"}, args...)...)
		return code, stderr
	}
	enable(t, 18299, "")
	if code, stderr := as("restart", "lodis@18299.socket"); code != 0 {
		t.Errorf("lodis may not restart lodis@18299.socket: %s", stderr)
	}
	if code, stderr := as("reset-failed", "lodis@18299.service"); code != 0 {
		t.Errorf("lodis may not reset lodis@18299.service: %s", stderr)
	}
	for _, c := range [][]string{{"reset-failed", "systemd-logind.service"}, {"start", "lodis@x.socket"}} {
		code, stderr := as(c...)
		if code == 0 || !strings.Contains(stderr, "Access denied") && !strings.Contains(stderr, "authentication required") {
			t.Errorf("lodis may %s %s (exit %d): %s", c[0], c[1], code, stderr)
		}
	}
}
