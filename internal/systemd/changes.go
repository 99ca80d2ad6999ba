package systemd

import (
	"strconv"
	"strings"
	"time"

	"github.com/godbus/dbus/v5"
)

// UnitChange is one lodis@ unit's news from a D-Bus signal: the properties
// that changed (ActiveState, SubState, Result, MainPID,
// ActiveEnterTimestamp, InactiveExitTimestamp, LoadState; Apply sets them on
// a UnitState), or that
// it was loaded (New) or unloaded (Removed).
type UnitChange struct {
	Unit    string
	Props   map[string]any
	New     bool
	Removed bool
}

// decodeAll decodes every signal from sigs into out, dropping those about
// other units, and closes out when sigs is closed (the connection ended) or
// closed is (the Bus was closed; nobody reads out any more).
func decodeAll(sigs <-chan *dbus.Signal, out chan<- UnitChange, closed <-chan struct{}) {
	defer close(out)
	for s := range sigs {
		c, ok := decodeSignal(s)
		if !ok {
			continue
		}
		select {
		case out <- c:
		case <-closed:
			return
		}
	}
}

// watchedProps are the properties UnitChange carries.
var watchedProps = map[string]bool{"ActiveState": true, "SubState": true, "Result": true,
	"MainPID": true, "ActiveEnterTimestamp": true, "InactiveExitTimestamp": true, "LoadState": true}

// decodeSignal turns a systemd signal about a lodis instance unit into a
// UnitChange; ok is false for any other signal.
func decodeSignal(s *dbus.Signal) (UnitChange, bool) {
	switch s.Name {
	case propsChanged:
		if !strings.HasPrefix(string(s.Path), lodisPathPrefix) && !strings.HasPrefix(string(s.Path), altPathPrefix) || len(s.Body) < 2 {
			return UnitChange{}, false
		}
		name := unescapeUnitPath(s.Path)
		if _, _, ok := ParseUnit(name); !ok {
			return UnitChange{}, false
		}
		changed, ok := s.Body[1].(map[string]dbus.Variant)
		if !ok {
			return UnitChange{}, false
		}
		c := UnitChange{Unit: name, Props: map[string]any{}}
		for k, v := range changed {
			if watchedProps[k] {
				c.Props[k] = v.Value()
			}
		}
		if len(c.Props) == 0 {
			return UnitChange{}, false
		}
		return c, true
	case managerIface + ".UnitNew", managerIface + ".UnitRemoved":
		if len(s.Body) < 1 {
			return UnitChange{}, false
		}
		name, _ := s.Body[0].(string)
		if _, _, ok := ParseUnit(name); !ok {
			return UnitChange{}, false
		}
		return UnitChange{Unit: name, New: s.Name == managerIface+".UnitNew", Removed: s.Name == managerIface+".UnitRemoved"}, true
	}
	return UnitChange{}, false
}

// unescapeUnitPath reverses systemd's object path escaping of a unit name
// ("lodis_408080_2esocket" → "lodis@8080.socket").
func unescapeUnitPath(p dbus.ObjectPath) string {
	s := strings.TrimPrefix(string(p), unitPathPrefix)
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '_' && i+2 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil {
				b.WriteByte(byte(v))
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Apply sets the fields of u that c names.
func (c UnitChange) Apply(u *UnitState) { applyProps(u, c.Props) }

// applyProps sets the fields of u named in props (as read or signalled).
func applyProps(u *UnitState, props map[string]any) {
	for k, v := range props {
		switch k {
		case "ActiveState":
			u.ActiveState, _ = v.(string)
		case "SubState":
			u.SubState, _ = v.(string)
		case "Result":
			u.Result, _ = v.(string)
		case "LoadState":
			u.LoadState, _ = v.(string)
		case "UnitFileState":
			u.UnitFileState, _ = v.(string)
		case "MainPID":
			u.MainPID, _ = v.(uint32)
		case "Environment":
			u.Environment, _ = v.([]string)
		case "ActiveEnterTimestamp":
			u.ActiveEnter = timestamp(v)
		case "InactiveExitTimestamp":
			u.InactiveExit = timestamp(v)
		}
	}
}

// timestamp turns a systemd timestamp property (µs since the epoch, 0 for
// never) into a time; zero for never or a value of another type.
func timestamp(v any) time.Time {
	if us, ok := v.(uint64); ok && us > 0 {
		return time.UnixMicro(int64(us))
	}
	return time.Time{}
}
