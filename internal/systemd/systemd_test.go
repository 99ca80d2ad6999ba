package systemd

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
)

// propsSignal is the PropertiesChanged signal systemd sends for unit.
func propsSignal(unit, iface string, props map[string]any) *dbus.Signal {
	ch := map[string]dbus.Variant{}
	for k, v := range props {
		ch[k] = dbus.MakeVariant(v)
	}
	path := unitPathPrefix + strings.NewReplacer("@", "_40", ".", "_2e").Replace(unit)
	return &dbus.Signal{Path: dbus.ObjectPath(path), Name: propsChanged, Body: []any{iface, ch, []string{}}}
}

func TestParseUnitAndPaths(t *testing.T) {
	for _, c := range []struct {
		name, port, typ string
		ok              bool
	}{
		{"lodis@8080.socket", "8080", "socket", true}, {"lodis@1.service", "1", "service", true},
		{"lodis@0.socket", "", "", false}, {"lodis@65536.socket", "", "", false}, {"lodis@x.socket", "", "", false},
		{"lodis@8080.timer", "", "", false}, {"lodis-supervisor.service", "", "", false}, {"nginx.service", "", "", false},
	} {
		port, typ, ok := ParseUnit(c.name)
		if port != c.port || typ != c.typ || ok != c.ok {
			t.Errorf("ParseUnit(%q) = %q %q %v", c.name, port, typ, ok)
		}
	}
	if n := unescapeUnitPath("/org/freedesktop/systemd1/unit/lodis_408080_2esocket"); n != "lodis@8080.socket" {
		t.Errorf("unescape: %q", n)
	}
}

func TestDecodeSignal(t *testing.T) {
	c, ok := decodeSignal(propsSignal("lodis@8080.service", "org.freedesktop.systemd1.Service",
		map[string]any{"Result": "signal", "MainPID": uint32(0), "ExecMainStatus": int32(9)}))
	if !ok || c.Unit != "lodis@8080.service" || c.Props["Result"] != "signal" || len(c.Props) != 2 {
		t.Errorf("decoded %+v %v", c, ok)
	}
	if _, ok := decodeSignal(propsSignal("nginx.service", unitIface, map[string]any{"ActiveState": "failed"})); ok {
		t.Error("a signal about nginx.service was taken for lodis")
	}
	if _, ok := decodeSignal(&dbus.Signal{Name: managerIface + ".UnitRemoved", Body: []any{"sshd.service", dbus.ObjectPath("/x")}}); ok {
		t.Error("UnitRemoved of another unit was taken for lodis")
	}
	r, ok := decodeSignal(&dbus.Signal{Name: managerIface + ".UnitRemoved", Body: []any{"lodis@80.socket", dbus.ObjectPath("/x")}})
	if !ok || !r.Removed || r.Unit != "lodis@80.socket" {
		t.Errorf("UnitRemoved decoded as %+v %v", r, ok)
	}
	var u UnitState
	applyProps(&u, map[string]any{"ActiveState": "active", "SubState": "running", "MainPID": uint32(5), "ActiveEnterTimestamp": uint64(1_700_000_000_000_000),
		"InactiveExitTimestamp": uint64(1_699_999_999_750_000)})
	if u.State() != "active/running" || u.MainPID != 5 || u.ActiveEnter.Unix() != 1_700_000_000 || u.ActiveEnter.Sub(u.InactiveExit) != 250*time.Millisecond {
		t.Errorf("applyProps gave %+v", u)
	}
	applyProps(&u, map[string]any{"InactiveExitTimestamp": uint64(0)})
	if !u.InactiveExit.IsZero() {
		t.Errorf("InactiveExitTimestamp 0 (never) gave %v", u.InactiveExit)
	}
	c, ok = decodeSignal(propsSignal("lodis@8080.service", unitIface, map[string]any{"ActiveState": "activating", "InactiveExitTimestamp": uint64(1)}))
	if !ok || c.Props["InactiveExitTimestamp"] != uint64(1) {
		t.Errorf("InactiveExitTimestamp not carried: %+v %v", c, ok)
	}
}

func TestWhere(t *testing.T) {
	if w := (BusOptions{Address: "unix:path=/x"}).Where(); len(w) != 1 || w[0] != "unix:path=/x" {
		t.Errorf("explicit address: %v", w)
	}
	t.Setenv("XDG_RUNTIME_DIR", "/run/user/1000")
	t.Setenv("DBUS_SESSION_BUS_ADDRESS", "")
	if w := (BusOptions{User: true}).Where(); len(w) != 2 || w[1] != "unix:path=/run/user/1000/systemd/private" {
		t.Errorf("user manager: %v", w)
	}
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", "")
	w := (BusOptions{}).Where()
	if w[len(w)-1] != "unix:path=/run/dbus/system_bus_socket" || (os.Geteuid() == 0) != (len(w) == 2) {
		t.Errorf("system manager: %v", w)
	}
}
