package isolation

import (
	"fmt"
	"net"
	"os"
	"sync"
	"testing"
	"time"
)

// traps are listeners the test runs on the host's loopback (which the
// machine shares) and on an abstract AF_UNIX address (which the machine's
// network namespace shares): stand-ins for "the outside". A worker must not
// reach any of them; each counts what arrives.
type traps struct {
	tcp4, tcp6, udp4, abstract string // addresses to give the probe ("" if not listening)

	mu   sync.Mutex
	got  []string // what arrived: "tcp4 from 127.0.0.1:…: first bytes"
	stop []func()
}

// listen starts the traps on ports base (TCP, 127.0.0.1), base+1 (TCP,
// [::1]) and base+2 (UDP, 127.0.0.1). A missing IPv6 loopback leaves tcp6
// empty (logged); any other failure fails the test.
func listen(t *testing.T, base int) *traps {
	tr := &traps{}
	t.Cleanup(tr.close)
	for _, c := range []struct {
		network, addr string
		dst           *string
	}{
		{"tcp4", fmt.Sprintf("127.0.0.1:%d", base), &tr.tcp4},
		{"tcp6", fmt.Sprintf("[::1]:%d", base+1), &tr.tcp6},
		{"unix", fmt.Sprintf("@lodis-isolation-%d-%d", os.Getpid(), base), &tr.abstract},
	} {
		l, err := net.Listen(c.network, c.addr)
		if err != nil {
			if c.network == "tcp6" {
				t.Logf("no IPv6 loopback here (%v): the IPv6 connect is not tried", err)
				continue
			}
			t.Fatalf("trap: %v", err)
		}
		*c.dst = c.addr
		if c.network == "unix" {
			*c.dst = c.addr[1:] // the probe adds the @
		}
		tr.stop = append(tr.stop, func() { l.Close() })
		go tr.accept(c.network, l)
	}
	pc, err := net.ListenPacket("udp4", fmt.Sprintf("127.0.0.1:%d", base+2))
	if err != nil {
		t.Fatalf("trap: %v", err)
	}
	tr.udp4 = pc.LocalAddr().String()
	tr.stop = append(tr.stop, func() { pc.Close() })
	go func() {
		b := make([]byte, 256)
		for {
			n, from, err := pc.ReadFrom(b)
			if err != nil {
				return
			}
			tr.record(fmt.Sprintf("udp4 from %s: %q", from, b[:n]))
		}
	}()
	return tr
}

func (tr *traps) accept(network string, l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			b := make([]byte, 256)
			n, _ := c.Read(b)
			tr.record(fmt.Sprintf("%s from %s: %q", network, c.RemoteAddr(), b[:n]))
		}()
	}
}

func (tr *traps) record(s string) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.got = append(tr.got, s)
}

// arrived returns what reached the traps so far.
func (tr *traps) arrived() []string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return append([]string(nil), tr.got...)
}

func (tr *traps) close() {
	for _, f := range tr.stop {
		f()
	}
}
