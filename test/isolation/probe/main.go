// Command probe is the isolation test's worker. Started by systemd as the
// ExecStart= of lodis@PORT.service, it serves the socket it is handed like
// any app (LISTEN_FDS, sd_notify READY=1 and WATCHDOG=1) and answers:
//
//	GET /hello   {"pid": N}: the worker is up
//	GET /report  the isolation.Report of every attack it tries
//
// /report takes these query parameters, all optional: peer (the PID of
// another worker), tcp4, tcp6, udp4 (loopback addresses the test listens on),
// look (comma-separated paths the other worker created; each must be
// invisible here), key (the description of a key the other worker added to
// its user keyring), abstract (an abstract AF_UNIX socket the test listens
// on) and walk=0 (skip the walk over the whole filesystem).
//
// Every attack is made once, as the worker, and undone when it succeeded
// (a traced process is detached, a socket closed); files it manages to
// create are left in place for the test to look for. Outside systemd it
// refuses to run.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"

	"github.com/lodis/lodis/activation"
	"github.com/lodis/lodis/test/isolation"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "exit":
			os.Exit(0)
		case "ia32":
			os.Exit(ia32Child(os.Args[2:]))
		}
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "probe:", err)
		os.Exit(1)
	}
}

func run() error {
	if os.Getenv("LISTEN_FDS") == "" {
		return fmt.Errorf("not socket-activated: run me as the ExecStart= of a socket-activated unit")
	}
	// The family is read from fd 3 before the activation package takes it.
	family, listening := socketFacts(3)
	ls, err := activation.Listeners("http", "")
	if err != nil {
		return err
	}
	c := isolation.Contract{ListenFamily: family, ListenOK: listening && len(ls) == 1}
	c.ExeSHA256, err = exeSHA256()
	if err != nil {
		c.ExeSHA256 = "error: " + err.Error()
	}
	c.StateDir = os.Getenv("STATE_DIRECTORY")
	if c.StateDir != "" {
		f := fmt.Sprintf("%s/probe-%d", c.StateDir, os.Getpid())
		c.StateDirOK = os.WriteFile(f, []byte("state\n"), 0o600) == nil
	}
	c.Stdout = fmt.Sprintf("lodis-isolation-probe: pid %d serving port %s", os.Getpid(), os.Getenv("LODIS_INSTANCE"))
	fmt.Println(c.Stdout)
	c.Notified, err = daemon.SdNotify(false, daemon.SdNotifyReady)
	if err != nil {
		c.NotifyError = err.Error()
	}
	go watchdog()

	mux := http.NewServeMux()
	mux.HandleFunc("/hello", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]int{"pid": os.Getpid()})
	})
	mux.HandleFunc("/report", func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rep := isolation.Report{PID: os.Getpid(), UID: os.Getuid(), GID: os.Getgid(),
			Port: os.Getenv("LODIS_INSTANCE"), Contract: c}
		rep.Attempts = attack(params(r))
		rep.Seconds = time.Since(start).Seconds()
		writeJSON(w, rep)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	return srv.Serve(ls[0])
}

// socketFacts returns the address family of fd ("AF_INET", "AF_INET6", …)
// and whether it is a listening stream socket.
func socketFacts(fd int) (string, bool) {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return "error: " + err.Error(), false
	}
	family := fmt.Sprintf("%T", sa)
	switch sa.(type) {
	case *unix.SockaddrInet4:
		family = "AF_INET"
	case *unix.SockaddrInet6:
		family = "AF_INET6"
	case *unix.SockaddrUnix:
		family = "AF_UNIX"
	}
	typ, err1 := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	acc, err2 := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	return family, err1 == nil && err2 == nil && typ == unix.SOCK_STREAM && acc == 1
}

func exeSHA256() (string, error) {
	f, err := os.Open("/proc/self/exe")
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// watchdog sends WATCHDOG=1 at half the unit's WatchdogSec=, if it has one.
func watchdog() {
	every, err := daemon.SdWatchdogEnabled(false)
	if err != nil || every == 0 {
		return
	}
	for range time.Tick(every / 2) {
		daemon.SdNotify(false, daemon.SdNotifyWatchdog)
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Connection", "close")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// target is what one /report request names.
type target struct {
	peer       int // PID of another worker; 0: none
	tcp4, tcp6 string
	udp4       string
	look       []string
	key        string
	abstract   string // name of an abstract AF_UNIX socket, without the @
	walk       bool
}

func params(r *http.Request) target {
	q := r.URL.Query()
	t := target{tcp4: q.Get("tcp4"), tcp6: q.Get("tcp6"), udp4: q.Get("udp4"), key: q.Get("key"), abstract: q.Get("abstract"), walk: q.Get("walk") != "0"}
	fmt.Sscan(q.Get("peer"), &t.peer)
	t.look = strings.FieldsFunc(q.Get("look"), func(r rune) bool { return r == ',' })
	return t
}

// dial is net.Dialer with a short timeout, for the network attempts.
var dial = &net.Dialer{Timeout: 2 * time.Second}
