// Package fleet tests lodis roll-outs across hosts the way an operator runs
// them: packaging/ansible's playbooks, run with Debian's Ansible over SSH
// against three real hosts on this machine — three systemd containers, each
// in a network namespace of its own with its own sshd, joined by a bridge in
// a "fabric" namespace the test makes (10.77.0.0/24; nothing is routed
// anywhere else). A front nginx in the fabric namespace balances over every
// host:port, and the load is sent to it from inside that namespace.
//
// The fleet is three machines, not the one testenv.Main boots, so TestMain
// is its own: it sets the fleet up, runs the tests and tears everything
// down — hosts, mounts, namespaces — on every way out: a failed set-up, a
// signal, a panicking test, the end of -test.timeout's time.
//
// It needs root, systemd-nspawn, ip (iproute2), sshd (openssh-server),
// ansible-playbook (ansible), ansible-lint, nginx and curl; test/deps.sh
// installs them.
package fleet

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"
)

// fl is the fleet every test uses, set up once by TestMain.
var fl *fleet

// setUpTimeout bounds building, booting and installing the fleet.
const setUpTimeout = 5 * time.Minute

func TestMain(m *testing.M) {
	if os.Getenv(loadChildEnv) == "1" {
		os.Exit(loadChild()) // the load generator, run inside the fabric namespace
	}
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	// An interrupted run still tears everything down.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(context.Background(), setUpTimeout)
	defer cancel()
	var err error
	ready := make(chan struct{})
	go func() {
		defer close(ready)
		fl, err = setUp(ctx)
	}()
	select {
	case <-ready:
	case s := <-sigs:
		cancel()
		<-ready
		if fl != nil {
			fl.Close()
		}
		fmt.Fprintf(os.Stderr, "test/fleet: %v during set-up: torn down\n", s)
		return 1
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "test/fleet:", err)
		if fl != nil {
			fl.dumpJournals()
			fl.Close()
		}
		return 1
	}
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "test/fleet: %v: tearing the fleet down\n", s)
		fl.Close()
		os.Exit(1)
	}()
	// go test's -timeout panics in a goroutine of its own, which ends the
	// process without a way back here: tear down a little before it.
	if d := testTimeout(); d > time.Minute {
		stop := time.AfterFunc(time.Until(start.Add(d-30*time.Second)), func() {
			fmt.Fprintf(os.Stderr, "test/fleet: -test.timeout %s is nearly over: tearing the fleet down\n", d)
			fl.dumpJournals()
			fl.Close()
			os.Exit(1)
		})
		defer stop.Stop()
	}
	code := m.Run()
	if code != 0 {
		fl.dumpJournals()
	}
	if err := fl.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "test/fleet: tear-down:", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// start is when the test binary started, which -test.timeout counts from.
var start = time.Now()

// testTimeout is the -test.timeout in force; 0: none.
func testTimeout() time.Duration {
	f := flag.Lookup("test.timeout")
	if f == nil {
		return 0
	}
	d, _ := time.ParseDuration(f.Value.String())
	return d
}

// tearDownOnPanic, deferred first by every test function, tears the fleet
// down when the test panics: the process then ends without returning to
// TestMain.
func tearDownOnPanic() {
	if r := recover(); r != nil {
		fmt.Fprintf(os.Stderr, "test/fleet: a test panicked: tearing the fleet down\n")
		fl.dumpJournals()
		fl.Close()
		panic(r)
	}
}
