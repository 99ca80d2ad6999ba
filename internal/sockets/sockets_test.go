package sockets

import (
	"errors"
	"net"
	"os"
	"strconv"
	"testing"
	"time"
)

// TestSnapshot: a real listener, two connections accepted and one waiting.
func TestSnapshot(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	var conns []net.Conn
	for i := 0; i < 3; i++ {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < 2; i++ {
		a, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
	}
	var c Counts
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		snap, err := Snapshot(map[string]bool{port: true})
		if err != nil {
			t.Fatal(err)
		}
		if c = snap[port]; c.Established == 3 && c.AcceptQueue == 1 {
			break
		}
	}
	if c.Established != 3 || c.AcceptQueue != 1 || c.Listening != 1 || c.Backlog < 1 {
		t.Fatalf("counts %+v, want 3 established, 1 in the accept queue, one listener with a backlog", c)
	}
	if len(c.Listeners) != 1 || c.Listeners[0] != (Listener{Addr: "127.0.0.1:" + port, Queue: 1, Backlog: c.Backlog}) {
		t.Fatalf("listeners %+v, want one on 127.0.0.1:%s with 1 queued", c.Listeners, port)
	}
	if snap, _ := Snapshot(map[string]bool{"1": true}); len(snap) != 0 {
		t.Fatalf("a port nothing uses: %+v", snap)
	}
}

// TestSnapshotPerListener: one port on two addresses is two listeners,
// each with its own queue.
func TestSnapshotPerListener(t *testing.T) {
	l4, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l4.Close()
	port := strconv.Itoa(l4.Addr().(*net.TCPAddr).Port)
	l2, err := net.Listen("tcp", "127.0.0.2:"+port)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	for i := 0; i < 2; i++ {
		c, err := net.Dial("tcp", "127.0.0.2:"+port)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	want := []Listener{{Addr: "127.0.0.1:" + port}, {Addr: "127.0.0.2:" + port, Queue: 2}}
	var got []Listener
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		snap, err := Snapshot(map[string]bool{port: true})
		if err != nil {
			t.Fatal(err)
		}
		got = snap[port].Listeners
		if len(got) == 2 && got[0].Queue == 0 && got[1].Queue == 2 {
			break
		}
	}
	if len(got) != 2 || got[0].Addr != want[0].Addr || got[1].Addr != want[1].Addr || got[0].Queue != 0 || got[1].Queue != 2 || got[1].Backlog < 1 {
		t.Fatalf("listeners %+v, want %+v (with their backlogs)", got, want)
	}
}
func TestOwnerFindsTheProcessThatAccepted(t *testing.T) {
	for _, listen := range []string{"127.0.0.1:0", "[::]:0"} {
		ln, err := net.Listen("tcp", listen)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		port := ln.Addr().(*net.TCPAddr).Port
		c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		pid, err := Owner(c.LocalAddr(), c.RemoteAddr(), []int{os.Getppid(), os.Getpid()})
		if err != nil || pid != os.Getpid() {
			t.Errorf("listening on %s: Owner = %d, %v; want this process, %d", listen, pid, err, os.Getpid())
		}
		if _, err := Owner(c.LocalAddr(), c.RemoteAddr(), []int{os.Getppid()}); !errors.Is(err, ErrNoOwner) {
			t.Errorf("listening on %s: Owner among other processes = %v, want ErrNoOwner", listen, err)
		}
		s.Close()
	}
}

func TestOwnerRefusesAnUnknownConnection(t *testing.T) {
	a := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}
	if _, err := Owner(a, a, []int{os.Getpid()}); err == nil || errors.Is(err, ErrNoOwner) {
		t.Errorf("Owner of a connection that does not exist = %v, want an error saying the kernel knows none", err)
	}
	if _, err := Owner(&net.UnixAddr{Name: "x"}, a, nil); err == nil {
		t.Error("Owner accepted a unix address")
	}
}
