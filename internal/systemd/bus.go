// Package systemd is lodis's only D-Bus code: a connection to systemd's
// manager (Bus) that acts on units through go-systemd (the Units interface)
// and turns systemd's D-Bus signals about lodis@ units into decoded
// UnitChange values, plus the names of lodis's units. Nothing here
// reconnects by itself: a caller that keeps a Bus checks Connected and dials
// again. Outside systemd (no bus to dial) Dial returns an error naming every
// address it tried.
package systemd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"
)

const (
	unitPathPrefix = "/org/freedesktop/systemd1/unit/"
	managerIface   = "org.freedesktop.systemd1.Manager"
	unitIface      = "org.freedesktop.systemd1.Unit"
	propsChanged   = "org.freedesktop.DBus.Properties.PropertiesChanged"
	// lodisPathPrefix and altPathPrefix are how "lodis@" and "lodis-alt@"
	// start in an escaped unit object path.
	lodisPathPrefix = unitPathPrefix + "lodis_40"
	altPathPrefix   = unitPathPrefix + "lodis_2dalt_40"
	// changesQueue is how many decoded changes wait for the caller.
	changesQueue = 512
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

// Where returns the addresses Dial tries, in order, for these options:
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
// go-systemd) and, when dialled by Dial, a stream of decoded unit changes.
// It does not reconnect by itself: when Connected reports false (or Changes
// is closed), Close it and dial again.
type Bus struct {
	addr    string // the address it is connected to
	direct  bool   // connected to systemd itself, not through a bus daemon
	conn    *sdbus.Conn
	sig     *dbus.Conn
	changes chan UnitChange
	closed  chan struct{} // closed by Close: the decoder stops
	once    sync.Once
}

// Dial connects to the first address of o.Where() that answers and
// subscribes to the signals about lodis@ units (see Changes). The error
// names every address tried.
func Dial(o BusOptions) (*Bus, error) { return dialBus(o, true) }

// DialUnits is Dial for a caller that acts on units without watching them
// (lodis upgrade driving a roll-out by itself): no signal subscription, so
// nothing queues up unread. Its Changes channel is nil.
func DialUnits(o BusOptions) (*Bus, error) { return dialBus(o, false) }

// Address is the D-Bus address the Bus is connected to, e.g.
// "unix:path=/run/systemd/private".
func (b *Bus) Address() string { return b.addr }

// Changes delivers the decoded changes of lodis@ units, in the order systemd
// signalled them; it is closed when the connection is lost or closed. Nil
// for a Bus from DialUnits.
func (b *Bus) Changes() <-chan UnitChange { return b.changes }

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
	b := &Bus{addr: addr, direct: direct, conn: conn, sig: sig, closed: make(chan struct{})}
	if !watch {
		return b, nil
	}
	sigs := make(chan *dbus.Signal, changesQueue)
	if err := b.subscribe(sigs); err != nil {
		b.Close()
		return nil, err
	}
	b.changes = make(chan UnitChange, changesQueue)
	go decodeAll(sigs, b.changes, b.closed)
	return b, nil
}

// warmUp pings systemd on a fresh direct connection until it answers.
// systemd 252 sometimes loses the first message a client sends right after
// authenticating on /run/systemd/private (seen on most connections on a
// busy machine), and that call would wait forever; a ping is harmless to
// lose. The first pings wait briefly (a live systemd answers within a
// millisecond or two), later ones longer, so a lost ping costs ~20 ms rather
// than a fixed wait, and a systemd slow to answer still has ~3 s in all.
func warmUp(c *dbus.Conn) error {
	obj := c.Object("org.freedesktop.systemd1", "/org/freedesktop/systemd1")
	var err error
	for _, wait := range warmUpWaits {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		err = obj.CallWithContext(ctx, "org.freedesktop.DBus.Peer.Ping", 0).Err
		cancel()
		if err == nil {
			return nil
		}
	}
	return fmt.Errorf("no answer to ping: %w", err)
}

// warmUpWaits are how long warmUp waits for each ping's answer.
var warmUpWaits = []time.Duration{20 * time.Millisecond, 40 * time.Millisecond, 80 * time.Millisecond,
	160 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond, 500 * time.Millisecond,
	500 * time.Millisecond, 500 * time.Millisecond, 500 * time.Millisecond}

// subscribe asks for the signals the supervisor needs. Through a bus daemon
// it adds match rules (unit PropertiesChanged, Manager UnitNew/UnitRemoved);
// a direct connection receives every signal anyway. Manager.Subscribe makes
// systemd emit them at all.
func (b *Bus) subscribe(sigs chan *dbus.Signal) error {
	b.sig.Signal(sigs)
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

// Close closes both connections; Changes is then closed.
func (b *Bus) Close() {
	b.once.Do(func() { close(b.closed) })
	b.conn.Close()
	b.sig.Close()
}

// Connected reports whether both connections are still up.
func (b *Bus) Connected() bool { return b.conn.Connected() && b.sig.Connected() }
