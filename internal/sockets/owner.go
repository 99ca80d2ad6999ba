package sockets

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"
)

// ErrNoOwner is Owner's error when none of the processes holds the
// connection's other end.
var ErrNoOwner = errors.New("no process of the unit holds the connection")

// ErrNotAccepted is Owner's error while the connection waits in its
// listener's queue: no process has accepted it yet.
var ErrNotAccepted = errors.New("not accepted yet")

// ErrServerClosed is Owner's error when the server end is closed already
// (the server answered and hung up): no process holds it any more.
var ErrServerClosed = errors.New("closed by its server")

// Owner tells which of pids holds the server end of a TCP connection made
// on this host, given the connection as the client sees it (local is the
// client's address, remote the listener's): the kernel's socket table names
// the server end's inode (sock_diag, both families: a dual-stack listener's
// IPv4 clients are in the IPv6 table), and each process's fd table
// (/proc/PID/fd) names the sockets it holds. When several processes share
// a listening socket, this is how a client knows which one accepted it.
// Reading another user's fd table needs CAP_SYS_PTRACE (root has it); a
// process that cannot be read counts as not holding it. ErrNoOwner when
// none does; ErrNotAccepted while no process has accepted the connection
// yet; ErrServerClosed once the process that accepted it has closed it.
func Owner(local, remote net.Addr, pids []int) (int, error) {
	l, ok1 := local.(*net.TCPAddr)
	r, ok2 := remote.(*net.TCPAddr)
	if !ok1 || !ok2 {
		return 0, fmt.Errorf("owner of %v → %v: not a TCP connection", local, remote)
	}
	inode, err := serverInode(l, r)
	if err != nil {
		return 0, err
	}
	want := "socket:[" + strconv.FormatUint(uint64(inode), 10) + "]"
	for _, pid := range pids {
		dir := "/proc/" + strconv.Itoa(pid) + "/fd"
		fds, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			if t, err := os.Readlink(dir + "/" + fd.Name()); err == nil && t == want {
				return pid, nil
			}
		}
	}
	return 0, ErrNoOwner
}

// serverInode finds the inode of the socket whose local end is the client's
// remote and whose peer is the client.
func serverInode(client, server *net.TCPAddr) (uint32, error) {
	fams := []uint8{syscall.AF_INET6}
	if server.IP.To4() != nil {
		fams = []uint8{syscall.AF_INET, syscall.AF_INET6}
	}
	var errs []error
	for _, fam := range fams {
		socks, err := dump(fam)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, s := range socks {
			if int(s.ID.SourcePort) == server.Port && int(s.ID.DestinationPort) == client.Port &&
				s.ID.Destination.Equal(client.IP) && s.State != stateListen {
				if s.INode == 0 {
					// A socket that no process holds: still queued on the
					// listener, or closed by the process that accepted it.
					if s.State == stateEstablished || s.State == stateSynRecv {
						return 0, fmt.Errorf("the connection %v → %v: %w", client, server, ErrNotAccepted)
					}
					return 0, fmt.Errorf("the connection %v → %v: %w", client, server, ErrServerClosed)
				}
				return s.INode, nil
			}
		}
	}
	if len(errs) == len(fams) {
		return 0, fmt.Errorf("read the kernel's socket table: %w", errors.Join(errs...))
	}
	return 0, fmt.Errorf("the kernel knows no server end of %v → %v", client, server)
}
