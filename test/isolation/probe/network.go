package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lodis/lodis/test/isolation"
)

// listenFor is how long a listening port the probe managed to open stays
// open for the test to try.
const listenFor = 90 * time.Second

// networkAttempts try to reach out: new TCP and UDP sockets to listeners
// the test runs on loopback, a new listening port, raw, ping, packet and
// netlink sockets, an abstract AF_UNIX socket of the test, and the same
// TCP connect through io_uring and through the 32-bit system call entry,
// which a seccomp filter on socket(2) does not see.
func networkAttempts(t target) []isolation.Attempt {
	var as []isolation.Attempt
	msg := []byte("lodis isolation probe " + os.Getenv("LODIS_INSTANCE") + "\n")
	for _, c := range []struct{ network, addr string }{{"tcp4", t.tcp4}, {"tcp6", t.tcp6}, {"udp4", t.udp4}} {
		if c.addr == "" {
			continue
		}
		conn, err := dial.Dial(c.network, c.addr)
		if err == nil {
			conn.SetDeadline(time.Now().Add(2 * time.Second))
			_, err = conn.Write(msg)
			conn.Close()
		}
		as = append(as, result("network", fmt.Sprintf("new %s socket to the test's listener %s", strings.ToUpper(c.network[:3]), c.addr), err, ""))
	}
	// A new listening port is harmless only if nobody outside can reach
	// it (a private network namespace): it stays open for a while, and
	// the test tries to connect.
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	a := result("network", "listen on a new TCP port", err, "")
	if err == nil {
		a.Detail = "listening on " + l.Addr().String()
		a.Created, a.Private = []string{"tcp:" + l.Addr().String()}, true
		time.AfterFunc(listenFor, func() { l.Close() })
	}
	as = append(as, a)
	for _, s := range []struct {
		name                  string
		domain, typ, protocol int
	}{
		{"raw IPv4 socket (ICMP)", unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_ICMP},
		{"ping socket (ICMP datagram)", unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_ICMP},
		{"packet socket", unix.AF_PACKET, unix.SOCK_RAW, 0x0300}, // ETH_P_ALL, big-endian
		{"netlink route socket", unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_ROUTE},
		{"new IPv4 TCP socket (socket(2) only)", unix.AF_INET, unix.SOCK_STREAM, 0},
		{"new IPv6 TCP socket (socket(2) only)", unix.AF_INET6, unix.SOCK_STREAM, 0},
	} {
		fd, err := unix.Socket(s.domain, s.typ|unix.SOCK_CLOEXEC, s.protocol)
		if err == nil {
			unix.Close(fd)
		}
		a := result("network", "open a "+s.name, err, "")
		// A TCP socket that reaches nothing is no attack: the connects
		// above say whether it reaches anything.
		a.Info = s.typ == unix.SOCK_STREAM
		as = append(as, a)
	}
	if t.abstract != "" {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err == nil {
			err = unix.Connect(fd, &unix.SockaddrUnix{Name: "@" + t.abstract})
			if err == nil {
				_, err = unix.Write(fd, msg)
			}
			unix.Close(fd)
		}
		as = append(as, result("network", "connect to the test's abstract AF_UNIX socket @"+t.abstract, err, ""))
	}
	if t.tcp4 != "" {
		as = append(as, uringConnect(t.tcp4, msg))
		as = append(as, ia32Connect(t.tcp4))
	}
	return as
}

// uringConnect opens an IPv4 TCP socket and connects it with io_uring
// (IORING_OP_SOCKET, IORING_OP_CONNECT, IORING_OP_SEND): no socket(2) or
// connect(2) system call is made.
func uringConnect(addr string, msg []byte) isolation.Attempt {
	const name = "new TCP socket to the test's listener through io_uring (no socket(2) call)"
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return result("network", name, err, "")
	}
	r, err := newRing()
	if err != nil {
		return result("network", name, err, "io_uring_setup: "+err.Error())
	}
	defer r.close()
	fd, err := r.socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		return result("network", name, err, "IORING_OP_SOCKET: "+err.Error())
	}
	defer unix.Close(fd)
	if err := r.connect(fd, ap); err != nil {
		return result("network", name, err, "IORING_OP_CONNECT: "+err.Error())
	}
	if err := r.send(fd, msg); err != nil {
		return result("network", name, err, "IORING_OP_SEND: "+err.Error())
	}
	return result("network", name, nil, "connected and sent")
}

// ia32Connect runs a child that makes the socket and connect calls through
// the 32-bit (int 0x80) entry. It is a child because a kernel without
// 32-bit emulation kills the caller.
func ia32Connect(addr string) isolation.Attempt {
	const name = "new TCP socket to the test's listener through the 32-bit system call entry"
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "/proc/self/exe", "ia32", addr).CombinedOutput()
	s := strings.TrimSpace(string(out))
	switch {
	case ctx.Err() != nil:
		// A seccomp filter that kills only the calling thread (the
		// default action for a foreign architecture) leaves the rest of
		// the child running, silent.
		a := result("network", name, ctx.Err(), "the child's calling thread died; killed after 5 s")
		a.Errno = "thread killed"
		return a
	case err == nil && s == "connected":
		return result("network", name, nil, "connected")
	case strings.HasPrefix(s, "errno "):
		a := result("network", name, fmt.Errorf("%s", s), "")
		a.Errno = strings.TrimPrefix(s, "errno ")
		return a
	case err != nil:
		a := result("network", name, err, s)
		a.Errno = "child: " + err.Error()
		return a
	}
	a := result("network", name, fmt.Errorf("%s", s), "")
	a.Errno = s
	return a
}
