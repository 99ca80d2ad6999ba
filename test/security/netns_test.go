package security

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// The test's network: a namespace of its own with loopback and a veth pair
// whose both ends are inside it, one holding nsAddr, a non-loopback address
// that exists nowhere else. No route leads out of it.
const (
	nsAddr   = "10.77.88.1"
	nsPrefix = "lodissec-" // + the parent's pid
	// netnsEnv, set in the re-executed test binary, names the namespace it
	// runs in.
	netnsEnv = "LODIS_SECURITY_NETNS"
)

// inNetns makes the test's network namespace, runs this test binary again
// inside it (only the network namespace changes: nsenter --net), removes
// the namespace, and returns the child's exit code. The machine the child
// boots inherits the namespace, and so does every connection the tests
// make.
func inNetns() int {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "test/security: needs root (network namespace, machine)")
		return 1
	}
	for _, tool := range []string{"ip", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			fmt.Fprintf(os.Stderr, "test/security: %s not found: install iproute2 and util-linux\n", tool)
			return 1
		}
	}
	name := nsPrefix + strconv.Itoa(os.Getpid())
	defer exec.Command("ip", "netns", "del", name).Run()
	for _, args := range [][]string{
		{"netns", "add", name},
		{"-n", name, "link", "set", "lo", "up"},
		{"-n", name, "link", "add", "sec0", "type", "veth", "peer", "name", "sec1"},
		{"-n", name, "addr", "add", nsAddr + "/24", "dev", "sec0"},
		{"-n", name, "link", "set", "sec0", "up"},
		{"-n", name, "link", "set", "sec1", "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "test/security: ip %s: %v: %s\n", strings.Join(args, " "), err, out)
			return 1
		}
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "test/security:", err)
		return 1
	}
	c := exec.Command("nsenter", append([]string{"--net=" + filepath.Join("/run/netns", name), "--", self}, os.Args[1:]...)...)
	c.Stdin, c.Stdout, c.Stderr = os.Stdin, os.Stdout, os.Stderr
	c.Env = append(os.Environ(), netnsEnv+"="+name)
	// nsenter execs the test binary in place: it dies with this process.
	c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := c.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "test/security: start the tests in the network namespace:", err)
		return 1
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		for s := range sig {
			c.Process.Signal(s)
		}
	}()
	err = c.Wait()
	signal.Stop(sig)
	if c.ProcessState != nil && c.ProcessState.Exited() {
		return c.ProcessState.ExitCode()
	}
	fmt.Fprintln(os.Stderr, "test/security: tests ended:", err)
	return 1
}
