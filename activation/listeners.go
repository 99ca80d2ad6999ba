// Package activation serves HTTP on the sockets systemd passes to a
// socket-activated service: it receives them (LISTEN_FDS, LISTEN_PID,
// LISTEN_FDNAMES), exits by itself when idle, drains gracefully on stop, and
// speaks sd_notify (READY=1, STATUS=, STOPPING=1, WATCHDOG=1). Outside systemd it
// binds an ordinary address instead and the notifications are no-ops.
//
// A service of your own needs five lines:
//
//	ls, err := activation.Listeners("", "127.0.0.1:8080")
//	if err != nil { log.Fatal(err) }
//	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
//	defer stop()
//	err = (&activation.Server{Handler: mux, IdleTimeout: 30 * time.Second}).Serve(ctx, ls...)
package activation

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"

	sdact "github.com/coreos/go-systemd/v22/activation"
)

// ErrNotActivated means the process was not started by socket activation
// (LISTEN_FDS is unset) and no fallback address was given.
var ErrNotActivated = errors.New("not socket-activated (LISTEN_FDS unset) and no listen address given")

// Listeners returns the listening sockets to serve on.
//
// When systemd passed sockets (LISTEN_FDS is set), it returns those whose
// FileDescriptorName= equals name, or all of them when name is "". It fails,
// without returning any socket, when LISTEN_PID names another process (the
// sockets were meant for someone else), when LISTEN_FDS is not a positive
// number, or when no listening stream socket has the requested name (a
// passed descriptor of another kind, such as a regular file or a datagram
// socket, is skipped; the error says so when that leaves none). The
// environment variables are unset on success so that child processes do not
// inherit them.
//
// When LISTEN_FDS is unset, it binds fallback with net.Listen("tcp", fallback);
// with an empty fallback it returns ErrNotActivated.
func Listeners(name, fallback string) ([]net.Listener, error) {
	fds, set := os.LookupEnv("LISTEN_FDS")
	if !set {
		if fallback == "" {
			return nil, ErrNotActivated
		}
		l, err := listenFallback(fallback)
		if err != nil {
			return nil, err
		}
		return []net.Listener{l}, nil
	}
	if err := checkEnv(fds, os.Getenv("LISTEN_PID"), os.Getpid()); err != nil {
		return nil, err
	}
	byName, err := sdact.ListenersWithNames()
	if err != nil {
		return nil, fmt.Errorf("receive passed sockets: %w", err)
	}
	var out []net.Listener
	var bad []string
	names := make([]string, 0, len(byName))
	for n, ls := range byName {
		names = append(names, n)
		for i, l := range ls {
			if l == nil {
				bad = append(bad, fmt.Sprintf("%s#%d", n, i))
				continue
			}
			if name == "" || n == name {
				out = append(out, l)
			}
		}
	}
	sort.Strings(names)
	if len(bad) > 0 {
		closeAll(out)
		return nil, fmt.Errorf("passed descriptor %s is not a listening stream socket", strings.Join(bad, ", "))
	}
	if len(out) == 0 {
		// go-systemd drops a descriptor that is not a listening stream socket
		// (a regular file, a datagram socket): say so rather than blame the name.
		n, _ := strconv.Atoi(fds)
		got := 0
		for _, ls := range byName {
			got += len(ls)
		}
		if got < n && (name == "" || got == 0) {
			return nil, fmt.Errorf("LISTEN_FDS=%d, but %d of the passed descriptors are not listening stream sockets", n, n-got)
		}
		return nil, fmt.Errorf("no passed socket is named %q (names: %s)", name, strings.Join(names, ", "))
	}
	return out, nil
}

// checkEnv validates LISTEN_FDS and LISTEN_PID before any descriptor is touched.
func checkEnv(fds, pid string, self int) error {
	if pid != "" {
		p, err := strconv.Atoi(pid)
		if err != nil {
			return fmt.Errorf("bad LISTEN_PID=%q: not a number", pid)
		}
		if p != self {
			return fmt.Errorf("LISTEN_PID=%d is not this process (%d): the sockets were passed to another process", p, self)
		}
	}
	n, err := strconv.Atoi(fds)
	if err != nil {
		return fmt.Errorf("bad LISTEN_FDS=%q: not a number", fds)
	}
	if n <= 0 {
		return fmt.Errorf("LISTEN_FDS=%d: systemd passed no socket", n)
	}
	return nil
}

func listenFallback(addr string) (net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("bad listen address %q: want HOST:PORT, e.g. 127.0.0.1:8080", addr)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return nil, fmt.Errorf("bad listen address %q: port %q is not a number from 0 to 65535", addr, port)
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, port))
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	return l, nil
}

func closeAll(ls []net.Listener) {
	for _, l := range ls {
		l.Close()
	}
}
