package security

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// systemctlAs runs systemctl as user, never asking for a password.
func systemctlAs(user string, args ...string) (string, error) {
	return as(user, append([]string{"systemctl", "--no-ask-password"}, args...)...)
}

// denied reports whether systemctl's output is polkit's refusal.
func denied(out string) bool {
	return strings.Contains(out, "Access denied") || strings.Contains(out, "authentication required") ||
		strings.Contains(out, "Interactive authentication")
}

// TestPolkitScope: user lodis may start, stop, restart and reset-failed
// lodis@PORT.socket / lodis@PORT.service (and lodis-alt@PORT.service) for
// ports 1024-65535, and start lodis-upgrade.service and
// lodis-rollout@SHA.service; every other verb and unit is refused, and the
// refused action has no effect. A member of group lodis and a plain user
// may do none of it.
func TestPolkitScope(t *testing.T) {
	ctx := context.Background()
	port := fmt.Sprint(portA)
	svc, sock := "lodis@"+port+".service", "lodis@"+port+".socket"
	if err := m.WriteFile("/etc/systemd/system/victim.service", []byte("[Service]\nExecStart=/bin/sleep infinity\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sh(t, "systemctl daemon-reload && systemctl start victim.service")
	// Whatever an attack that was not refused broke is put back, so that
	// the tests after this one see the machine they expect.
	defer sh(t, `systemctl stop victim.service lodis@80.socket lodis@1023.service lodis@1023.socket 2>/dev/null || true
rm -rf /etc/systemd/system.control /run/systemd/system.control
systemctl unmask lodis-upgrade.path 2>/dev/null || true
systemctl disable victim.service 2>/dev/null || true
systemctl daemon-reload
systemctl thaw lodis@`+fmt.Sprint(portA)+`.service 2>/dev/null || true
systemctl start lodis-upgrade.path lodis-supervisor.service`)
	wake := func() {
		t.Helper()
		if !serves(loopback(portA), 5*time.Second) {
			t.Fatalf("port %d does not serve", portA)
		}
	}
	wake()

	// What user lodis may do: the rule works at all.
	for _, args := range [][]string{
		{"restart", svc}, {"reset-failed", svc}, {"stop", svc}, {"start", svc},
		{"restart", sock}, {"start", "lodis-alt@" + port + ".service"}, {"stop", "lodis-alt@" + port + ".service"},
	} {
		if out, err := systemctlAs("lodis", args...); err != nil {
			t.Errorf("user lodis may not %v: %v: %s", args, err, out)
		}
	}
	wake()

	sha := releases(t).Active
	refused := [][]string{
		{"kill", svc},
		{"kill", "--signal=SIGKILL", sock},
		{"set-property", svc, "MemoryMax=1M"},
		{"set-property", "--runtime", svc, "CPUQuota=1%"},
		{"freeze", svc},
		{"reload", svc},
		{"clean", "--what=all", svc},
		{"start", "lodis@80.socket"},
		{"start", "lodis@1023.service"},
		{"start", "lodis@70000.socket"},
		{"start", "lodis@0" + port + ".socket"},
		{"start", "lodis-alt@" + port + ".socket"},
		{"start", "victim.service"},
		{"stop", "victim.service"},
		{"restart", "systemd-journald.service"},
		{"stop", "lodis-supervisor.service"},
		{"restart", "lodis-supervisor.service"},
		{"stop", "lodis-upgrade.path"},
		{"restart", "lodis-upgrade.service"},
		{"stop", "lodis-upgrade.service"},
		{"start", "lodis-rollout@" + sha[:12] + ".service"},
		{"restart", "lodis-rollout@" + sha + ".service"},
		{"start", "lodis-rollout@" + strings.ToUpper(sha) + ".service"},
		{"enable", "victim.service"},
		{"mask", "lodis-upgrade.path"},
		{"daemon-reload"},
	}
	pid := mainPID(svc)
	victim := mainPID("victim.service")
	for _, who := range []string{"lodis", groupMember, plainUser} {
		for _, args := range refused {
			out, err := systemctlAs(who, args...)
			if err == nil || !denied(out) {
				t.Errorf("as %s, systemctl %v was not refused by polkit (%v): %s", who, args, err, strings.TrimSpace(out))
			}
		}
		// A transient unit is a unit of the caller's choosing, run as root.
		if out, err := as(who, "systemd-run", "--no-ask-password", "--unit=lodis@18899.service", "/bin/sh", "-c", "id > /run/pwned"); err == nil {
			t.Errorf("as %s, systemd-run started a transient unit: %s", who, out)
		}
		if who == "lodis" {
			continue
		}
		// Group members and plain users get nothing of what lodis may do.
		for _, args := range [][]string{{"restart", svc}, {"stop", sock}, {"reset-failed", svc}, {"start", "lodis-upgrade.service"},
			{"start", "lodis-rollout@" + sha + ".service"}} {
			if out, err := systemctlAs(who, args...); err == nil || !denied(out) {
				t.Errorf("as %s, systemctl %v was not refused (%v): %s", who, args, err, strings.TrimSpace(out))
			}
		}
	}
	// No refused action had an effect.
	if now := mainPID(svc); now != pid {
		t.Errorf("%s main pid %d → %d: killed or restarted", svc, pid, now)
	}
	if now := mainPID("victim.service"); now != victim {
		t.Errorf("victim.service main pid %d → %d", victim, now)
	}
	if v := m.Prop(ctx, svc, "MemoryMax"); v == "1048576" {
		t.Errorf("%s MemoryMax set to %s", svc, v)
	}
	if _, err := os.Stat(host("/etc/systemd/system.control")); err == nil {
		t.Errorf("/etc/systemd/system.control exists: set-property persisted")
	}
	if _, err := m.Output(ctx, "test", "-e", "/run/pwned"); err == nil {
		t.Errorf("a transient unit ran")
	}
	for _, u := range []string{"lodis@80.socket", "lodis@1023.service", "lodis@70000.socket", "lodis-alt@" + port + ".socket"} {
		if st := m.State(ctx, u); strings.HasPrefix(st, "active") {
			t.Errorf("%s is %s", u, st)
		}
	}
	if st := m.State(ctx, "lodis-upgrade.path"); !strings.HasPrefix(st, "active") {
		t.Errorf("lodis-upgrade.path is %s", st)
	}
	if en := m.Prop(ctx, "victim.service", "UnitFileState"); en == "enabled" {
		t.Errorf("victim.service enabled")
	}
}
