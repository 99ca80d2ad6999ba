package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"
)

const (
	unitPathPrefix = "/org/freedesktop/systemd1/unit/"
	managerIface   = "org.freedesktop.systemd1.Manager"
	unitIface      = "org.freedesktop.systemd1.Unit"
	propsChanged   = "org.freedesktop.DBus.Properties.PropertiesChanged"
	// lodisPathPrefix is how "lodis@" starts in an escaped unit object path.
	lodisPathPrefix = unitPathPrefix + "lodis_40"
)

// BusOptions choose which systemd instance a Bus talks to.
type BusOptions struct {
	// User selects the calling user's service manager instead of the system
	// manager.
	User bool
	// Address, if set, is the D-Bus address to dial instead of the default,
	// e.g. "unix:path=/run/systemd/private". An address ending in
	// "/systemd/private" is a direct connection to systemd (no bus daemon).
	Address string
}

// Where returns the addresses DialBus tries, in order, for these options:
// for the system manager /run/systemd/private first when running as root,
// then the system bus; for the user manager the session bus, then
// $XDG_RUNTIME_DIR/systemd/private.
func (o BusOptions) Where() []string {
	if o.Address != "" {
		return []string{o.Address}
	}
	if o.User {
		var out []string
		if a := os.Getenv("DBUS_SESSION_BUS_ADDRESS"); a != "" {
			out = append(out, a)
		}
		if rt := os.Getenv("XDG_RUNTIME_DIR"); rt != "" {
			out = append(out, "unix:path="+filepath.Join(rt, "bus"), "unix:path="+filepath.Join(rt, "systemd/private"))
		}
		return out
	}
	var out []string
	if os.Geteuid() == 0 {
		out = append(out, "unix:path=/run/systemd/private")
	}
	if a := os.Getenv("DBUS_SYSTEM_BUS_ADDRESS"); a != "" {
		return append(out, a)
	}
	return append(out, "unix:path=/run/dbus/system_bus_socket")
}

// Bus is a connection to systemd's D-Bus API: the Units methods (through
// go-systemd) and a stream of unit changes from D-Bus signals. It does not
// reconnect by itself: when Lost is closed, Close it and dial again.
type Bus struct {
	Address string // the address it is connected to
	direct  bool   // connected to systemd itself, not through a bus daemon
	conn    *sdbus.Conn
	sig     *dbus.Conn
	sigCh   chan *dbus.Signal
}

// DialBus connects to the first address of o.Where() that answers and
// subscribes to unit signals. The error names every address tried.
func DialBus(o BusOptions) (*Bus, error) { return dialBus(o, true) }

// DialUnits is DialBus for a caller that acts on units without watching
// them (lodis upgrade driving a roll-out by itself): no signal subscription,
// so no signal queues up unread. Its signal channel is nil.
func DialUnits(o BusOptions) (*Bus, error) { return dialBus(o, false) }

func dialBus(o BusOptions, watch bool) (*Bus, error) {
	where := o.Where()
	if len(where) == 0 {
		return nil, errors.New("no D-Bus address for the user manager: set XDG_RUNTIME_DIR or DBUS_SESSION_BUS_ADDRESS")
	}
	var errs []string
	for _, addr := range where {
		b, err := dialOne(addr, watch)
		if err == nil {
			return b, nil
		}
		errs = append(errs, fmt.Sprintf("%s: %v", strings.TrimPrefix(addr, "unix:path="), err))
	}
	return nil, fmt.Errorf("systemd D-Bus unreachable (%s)", strings.Join(errs, "; "))
}

func dialOne(addr string, watch bool) (*Bus, error) {
	direct := strings.HasSuffix(addr, "/systemd/private")
	dial := func() (*dbus.Conn, error) {
		c, err := dbus.Dial(addr)
		if err != nil {
			return nil, err
		}
		if err := c.Auth([]dbus.Auth{dbus.AuthExternal(strconv.Itoa(os.Getuid()))}); err != nil {
			c.Close()
			return nil, err
		}
		if !direct {
			if err := c.Hello(); err != nil {
				c.Close()
				return nil, err
			}
			return c, nil
		}
		if err := warmUp(c); err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	}
	conn, err := sdbus.NewConnection(dial)
	if err != nil {
		return nil, err
	}
	sig, err := dial()
	if err != nil {
		conn.Close()
		return nil, err
	}
	b := &Bus{Address: addr, direct: direct, conn: conn, sig: sig}
	if !watch {
		return b, nil
	}
	b.sigCh = make(chan *dbus.Signal, 512)
	if err := b.subscribe(); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// warmUp pings systemd on a fresh direct connection until it answers.
// systemd 252 sometimes loses the first message a client sends right after
// authenticating on /run/systemd/private (about one connection in five
// here), and that call would wait forever; a ping is harmless to lose.
func warmUp(c *dbus.Conn) error {
	obj := c.Object("org.freedesktop.systemd1", "/org/freedesktop/systemd1")
	var err error
	for i := 0; i < 10; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 250*time.Millisecond)
		err = obj.CallWithContext(ctx, "org.freedesktop.DBus.Peer.Ping", 0).Err
		cancel()
		if err == nil {
			return nil
		}
	}
	return fmt.Errorf("no answer to ping: %w", err)
}

// subscribe asks for the signals the supervisor needs. Through a bus daemon
// it adds match rules (unit PropertiesChanged, Manager UnitNew/UnitRemoved);
// a direct connection receives every signal anyway. Manager.Subscribe makes
// systemd emit them at all.
func (b *Bus) subscribe() error {
	b.sig.Signal(b.sigCh)
	if !b.direct {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		rules := [][]dbus.MatchOption{
			{dbus.WithMatchSender("org.freedesktop.systemd1"), dbus.WithMatchInterface("org.freedesktop.DBus.Properties"),
				dbus.WithMatchMember("PropertiesChanged"), dbus.WithMatchPathNamespace("/org/freedesktop/systemd1/unit")},
			{dbus.WithMatchSender("org.freedesktop.systemd1"), dbus.WithMatchInterface(managerIface), dbus.WithMatchMember("UnitNew")},
			{dbus.WithMatchSender("org.freedesktop.systemd1"), dbus.WithMatchInterface(managerIface), dbus.WithMatchMember("UnitRemoved")},
		}
		for _, r := range rules {
			if err := b.sig.AddMatchSignalContext(ctx, r...); err != nil {
				return fmt.Errorf("add match rule: %w", err)
			}
		}
	}
	obj := b.sig.Object("org.freedesktop.systemd1", "/org/freedesktop/systemd1")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := obj.CallWithContext(ctx, managerIface+".Subscribe", 0).Err; err != nil {
		return fmt.Errorf("subscribe to systemd signals: %w", err)
	}
	return nil
}

// Close closes both connections; Lost is then closed.
func (b *Bus) Close() {
	b.conn.Close()
	b.sig.Close()
}

// Connected reports whether both connections are still up.
func (b *Bus) Connected() bool { return b.conn.Connected() && b.sig.Connected() }

// unitChange is one unit's news from a signal: the properties that changed
// (ActiveState, SubState, Result, MainPID, ActiveEnterTimestamp, LoadState),
// or that it was loaded (New) or unloaded (Removed).
type unitChange struct {
	Unit    string
	Props   map[string]any
	New     bool
	Removed bool
}

// watchedProps are the properties unitChange carries.
var watchedProps = map[string]bool{"ActiveState": true, "SubState": true, "Result": true,
	"MainPID": true, "ActiveEnterTimestamp": true, "LoadState": true}

// decodeSignal turns a systemd signal about a lodis instance unit into a
// unitChange; ok is false for any other signal.
func decodeSignal(s *dbus.Signal) (unitChange, bool) {
	switch s.Name {
	case propsChanged:
		if !strings.HasPrefix(string(s.Path), lodisPathPrefix) || len(s.Body) < 2 {
			return unitChange{}, false
		}
		name := unescapeUnitPath(s.Path)
		if _, _, ok := ParseUnit(name); !ok {
			return unitChange{}, false
		}
		changed, ok := s.Body[1].(map[string]dbus.Variant)
		if !ok {
			return unitChange{}, false
		}
		c := unitChange{Unit: name, Props: map[string]any{}}
		for k, v := range changed {
			if watchedProps[k] {
				c.Props[k] = v.Value()
			}
		}
		if len(c.Props) == 0 {
			return unitChange{}, false
		}
		return c, true
	case managerIface + ".UnitNew", managerIface + ".UnitRemoved":
		if len(s.Body) < 1 {
			return unitChange{}, false
		}
		name, _ := s.Body[0].(string)
		if _, _, ok := ParseUnit(name); !ok {
			return unitChange{}, false
		}
		return unitChange{Unit: name, New: s.Name == managerIface+".UnitNew", Removed: s.Name == managerIface+".UnitRemoved"}, true
	}
	return unitChange{}, false
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

// applyProps sets the fields of u named in props (as carried by unitChange).
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
		case "ActiveEnterTimestamp":
			if us, ok := v.(uint64); ok && us > 0 {
				u.ActiveEnter = time.UnixMicro(int64(us))
			} else {
				u.ActiveEnter = time.Time{}
			}
		}
	}
}

// Signals returns the raw signal channel; it is closed when the connection
// is lost or closed.
func (b *Bus) signals() <-chan *dbus.Signal { return b.sigCh }

func (b *Bus) job(ctx context.Context, verb, name string,
	f func(context.Context, string, string, chan<- string) (int, error)) error {
	ch := make(chan string, 1) // buffered: go-systemd sends while holding its job lock
	if _, err := f(ctx, name, "replace", ch); err != nil {
		return fmt.Errorf("%s %s: %w", verb, name, err)
	}
	select {
	case r := <-ch:
		return jobError(verb, name, r)
	case <-ctx.Done():
		return fmt.Errorf("%s %s: waiting for the job: %w", verb, name, ctx.Err())
	}
}

// StartUnit implements Units.
func (b *Bus) StartUnit(ctx context.Context, name string) error {
	return b.job(ctx, "start", name, b.conn.StartUnitContext)
}

// StopUnit implements Units.
func (b *Bus) StopUnit(ctx context.Context, name string) error {
	return b.job(ctx, "stop", name, b.conn.StopUnitContext)
}

// RestartUnit implements Units.
func (b *Bus) RestartUnit(ctx context.Context, name string) error {
	return b.job(ctx, "restart", name, b.conn.RestartUnitContext)
}

// TryRestartUnit implements Units.
func (b *Bus) TryRestartUnit(ctx context.Context, name string) error {
	return b.job(ctx, "try-restart", name, b.conn.TryRestartUnitContext)
}

// EnqueueRestartUnit implements Units: no job channel, so nothing waits for
// the job (and go-systemd keeps no listener for it).
func (b *Bus) EnqueueRestartUnit(ctx context.Context, name string) error {
	if _, err := b.conn.RestartUnitContext(ctx, name, "replace", nil); err != nil {
		return fmt.Errorf("restart %s: %w", name, err)
	}
	return nil
}

// ResetFailedUnit implements Units.
func (b *Bus) ResetFailedUnit(ctx context.Context, name string) error {
	if err := b.conn.ResetFailedUnitContext(ctx, name); err != nil {
		return fmt.Errorf("reset-failed %s: %w", name, err)
	}
	return nil
}

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
	for _, p := range []string{"LoadState", "ActiveState", "SubState", "ActiveEnterTimestamp", "UnitFileState"} {
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
			tprops = append(tprops, "MainPID")
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

// ListenAddress returns the first stream address the socket unit listens on
// (Socket.Listen), e.g. "[::]:8080"; "" when it has none or is not loaded.
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

var _ Units = (*Bus)(nil)

func (b *Bus) where() string { return b.Address }
