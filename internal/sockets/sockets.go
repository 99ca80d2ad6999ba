// Package sockets reads the kernel's table of TCP sockets (sock_diag over
// netlink, as ss does) to tell, for each listening port, how many
// connections are established to it and how many wait in its accept queue:
// what no peer of lodis shows, and what lets lodis count a port idle
// whatever app serves it. It needs no privilege; AF_NETLINK must be allowed
// (RestrictAddressFamilies=).
package sockets

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"syscall"

	"github.com/vishvananda/netlink"
)

// TCP states of the kernel (include/net/tcp_states.h).
const (
	stateEstablished = 1
	stateSynRecv     = 3
	stateTimeWait    = 6
	stateClose       = 7
	stateListen      = 10
)

// Counts is what the kernel says of one port.
type Counts struct {
	// Established is how many connections to the port are established
	// (accepted or waiting to be).
	Established int
	// AcceptQueue is how many established connections wait for the app to
	// accept them, summed over the port's listening sockets; Backlog is
	// their limit (listen(2)'s backlog, Backlog= of the socket unit).
	AcceptQueue, Backlog int
	// Listening is how many listening sockets the port has (one per
	// address family, or per address).
	Listening int
	// Active is how many connections to the port are in any state of
	// their life but the last (TIME_WAIT): established, being set up or
	// being closed. A port with none is idle.
	Active int
	// Listeners are those sockets one by one, ordered by address.
	Listeners []Listener
}

// Listener is one listening socket of a port.
type Listener struct {
	// Addr is the address it listens on, as HOST:PORT ("127.0.0.1:8080",
	// "[::]:8080").
	Addr string
	// Queue is how many established connections wait in its accept queue;
	// Backlog is the queue's limit.
	Queue, Backlog int
}

// Snapshot returns the counts of every port in ports (decimal strings)
// that the kernel knows, over IPv4 and IPv6. Ports with nothing are absent.
func Snapshot(ports map[string]bool) (map[string]Counts, error) {
	out := map[string]Counts{}
	var errs []error
	for _, fam := range []uint8{syscall.AF_INET, syscall.AF_INET6} {
		socks, err := dump(fam)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, s := range socks {
			p := strconv.Itoa(int(s.ID.SourcePort))
			if !ports[p] {
				continue
			}
			c := out[p]
			switch s.State {
			case stateListen:
				c.Listening++
				c.AcceptQueue += int(s.RQueue)
				c.Backlog += int(s.WQueue)
				c.Listeners = append(c.Listeners, Listener{Addr: net.JoinHostPort(s.ID.Source.String(), p),
					Queue: int(s.RQueue), Backlog: int(s.WQueue)})
			case stateEstablished:
				c.Established++
				c.Active++
			case stateTimeWait, stateClose:
				continue
			default:
				c.Active++
			}
			out[p] = c
		}
	}
	if len(errs) == 2 {
		return nil, fmt.Errorf("read the kernel's socket table: %w", errors.Join(errs...))
	}
	for p, c := range out {
		slices.SortFunc(c.Listeners, func(a, b Listener) int { return cmp.Compare(a.Addr, b.Addr) })
		out[p] = c
	}
	return out, nil
}

// dump reads every TCP socket of one family, retrying a dump the kernel
// interrupted (the table changed meanwhile).
func dump(fam uint8) ([]*netlink.Socket, error) {
	var err error
	for i := 0; i < 3; i++ {
		var socks []*netlink.Socket
		socks, err = netlink.SocketDiagTCP(fam)
		if err == nil || !errors.Is(err, netlink.ErrDumpInterrupted) {
			return socks, err
		}
	}
	return nil, err
}
