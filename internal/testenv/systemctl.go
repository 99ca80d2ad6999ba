package testenv

import (
	"context"
	"strconv"
	"strings"
)

// Systemctl runs systemctl inside the machine; see Output.
func (m *Machine) Systemctl(ctx context.Context, args ...string) (string, error) {
	return m.Output(ctx, append([]string{"systemctl"}, args...)...)
}

// Prop returns one property of a unit (systemctl show -P), trimmed; "" on error.
func (m *Machine) Prop(ctx context.Context, unit, prop string) string {
	out, err := m.Output(ctx, "systemctl", "show", "-P", prop, unit)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(out)
}

// State returns ActiveState and SubState of a unit, e.g. "active/listening";
// "unknown" when systemctl fails.
func (m *Machine) State(ctx context.Context, unit string) string {
	out, err := m.Output(ctx, "systemctl", "show", "-P", "ActiveState", "-P", "SubState", unit)
	if err != nil {
		return "unknown"
	}
	return strings.Join(strings.Fields(out), "/")
}

// MainPID is a unit's main process as the machine sees it (its MainPID
// property); 0 when it runs none or systemctl fails.
func (m *Machine) MainPID(ctx context.Context, unit string) int {
	n, _ := strconv.Atoi(m.Prop(ctx, unit, "MainPID"))
	return n
}
