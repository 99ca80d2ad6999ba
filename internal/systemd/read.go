package systemd

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/godbus/dbus/v5"
)

// UnitState implements Units: a handful of property reads, no full dump. A
// unit that is not loaded is reported as LoadState "not-loaded",
// inactive/dead, without loading it: reading a unit by its object path would
// load it, and systemd would unload it again at once (UnitNew, UnitRemoved),
// an endless loop for a watcher that reads every new unit.
func (b *Bus) UnitState(ctx context.Context, name string) (UnitState, error) {
	u := UnitState{Name: name}
	var path dbus.ObjectPath
	err := b.sig.Object("org.freedesktop.systemd1", "/org/freedesktop/systemd1").
		CallWithContext(ctx, managerIface+".GetUnit", 0, name).Store(&path)
	var de dbus.Error
	if errors.As(err, &de) && de.Name == "org.freedesktop.systemd1.NoSuchUnit" {
		u.LoadState, u.ActiveState, u.SubState = "not-loaded", "inactive", "dead"
		return u, nil
	}
	if err != nil {
		return u, fmt.Errorf("look up %s: %w", name, err)
	}
	obj := b.sig.Object("org.freedesktop.systemd1", path)
	get := func(iface, prop string) (any, error) {
		var v dbus.Variant
		if err := obj.CallWithContext(ctx, "org.freedesktop.DBus.Properties.Get", 0, iface, prop).Store(&v); err != nil {
			return nil, fmt.Errorf("read %s of %s: %w", prop, name, err)
		}
		return v.Value(), nil
	}
	props := map[string]any{}
	for _, p := range []string{"LoadState", "ActiveState", "SubState", "ActiveEnterTimestamp", "InactiveExitTimestamp", "UnitFileState"} {
		if props[p], err = get(unitIface, p); err != nil {
			return u, err
		}
	}
	var typ string
	switch {
	case strings.HasSuffix(name, ".service"):
		typ = "Service"
	case strings.HasSuffix(name, ".socket"):
		typ = "Socket"
	}
	if props["LoadState"] == "loaded" && typ != "" {
		tprops := []string{"Result"}
		if typ == "Service" {
			tprops = append(tprops, "MainPID", "Environment")
		}
		for _, p := range tprops {
			if props[p], err = get("org.freedesktop.systemd1."+typ, p); err != nil {
				return u, err
			}
		}
	}
	applyProps(&u, props)
	return u, nil
}

// ListUnits implements Units.
func (b *Bus) ListUnits(ctx context.Context, patterns ...string) ([]UnitState, error) {
	st, err := b.conn.ListUnitsByPatternsContext(ctx, nil, patterns)
	if err != nil {
		return nil, fmt.Errorf("list units %s: %w", strings.Join(patterns, " "), err)
	}
	out := make([]UnitState, 0, len(st))
	for _, s := range st {
		if s.LoadState != "loaded" {
			continue
		}
		u, err := b.UnitState(ctx, s.Name)
		if err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return out, nil
}

// ListenAddress implements Units.
func (b *Bus) ListenAddress(ctx context.Context, socket string) (string, error) {
	var path dbus.ObjectPath
	sd := b.sig.Object("org.freedesktop.systemd1", "/org/freedesktop/systemd1")
	if err := sd.CallWithContext(ctx, managerIface+".GetUnit", 0, socket).Store(&path); err != nil {
		return "", nil
	}
	var v dbus.Variant
	err := b.sig.Object("org.freedesktop.systemd1", path).CallWithContext(ctx, "org.freedesktop.DBus.Properties.Get", 0,
		"org.freedesktop.systemd1.Socket", "Listen").Store(&v)
	if err != nil {
		return "", fmt.Errorf("read Listen of %s: %w", socket, err)
	}
	var ls []struct{ Type, Address string }
	if err := dbus.Store([]any{v.Value()}, &ls); err != nil {
		return "", fmt.Errorf("read Listen of %s: %w", socket, err)
	}
	for _, l := range ls {
		if l.Type == "Stream" {
			return l.Address, nil
		}
	}
	return "", nil
}

// UnitPIDs implements Units: the unit's ControlGroup= property, then the
// cgroup's member processes (cgroup v2, /sys/fs/cgroup).
func (b *Bus) UnitPIDs(ctx context.Context, name string) ([]int, error) {
	// GetUnitProcesses answers whatever the cgroup layout (unified,
	// hybrid or legacy) and needs no privilege: an array of (control
	// group, PID, command line).
	var procs []struct {
		CGroup  string
		PID     uint32
		Command string
	}
	err := b.sig.Object("org.freedesktop.systemd1", "/org/freedesktop/systemd1").
		CallWithContext(ctx, managerIface+".GetUnitProcesses", 0, name).Store(&procs)
	var de dbus.Error
	if errors.As(err, &de) && (de.Name == "org.freedesktop.systemd1.NoSuchUnit" || de.Name == "org.freedesktop.DBus.Error.UnixProcessIdUnknown") {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("processes of %s: %w", name, err)
	}
	pids := make([]int, 0, len(procs))
	for _, p := range procs {
		pids = append(pids, int(p.PID))
	}
	return pids, nil
}

var _ Units = (*Bus)(nil)
