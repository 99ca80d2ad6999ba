package fleet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The fleet's network: a bridge in the fabric namespace holds fabricAddr;
// host i (from 1) is hostAddr(i), on the far end of a veth pair whose near
// end is a port of the bridge. No namespace has a default route, and the
// fabric has no link to the machine's own network: every address the test
// uses lives here.
const (
	subnet     = "10.77.0.0/24"
	fabricAddr = "10.77.0.1"
	nsPrefix   = "lodisfleet-" // + pid + "-" + role: tells a leftover of a dead run
)

func hostAddr(i int) string { return fmt.Sprintf("10.77.0.%d", 10+i) }

// network is the namespaces one test run made.
type network struct {
	prefix string   // nsPrefix + this process's pid
	made   []string // namespace names, in creation order
	logf   func(format string, a ...any)
}

func (n *network) fabric() string    { return n.prefix + "-fabric" }
func (n *network) host(i int) string { return fmt.Sprintf("%s-h%d", n.prefix, i) }

// nsPath is where `ip netns` keeps a namespace, for systemd-nspawn.
func nsPath(name string) string { return filepath.Join("/run/netns", name) }

func ip(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// newNetwork makes the fabric namespace with its bridge and one namespace
// per host, linked to the bridge. On error what was made is still recorded
// in the returned network, for Close.
func newNetwork(ctx context.Context, hosts int, logf func(string, ...any)) (*network, error) {
	n := &network{prefix: nsPrefix + strconv.Itoa(os.Getpid()), logf: logf}
	add := func(name string) error {
		if err := ip(ctx, "netns", "add", name); err != nil {
			return err
		}
		n.made = append(n.made, name)
		return ip(ctx, "-n", name, "link", "set", "lo", "up")
	}
	f := n.fabric()
	if err := add(f); err != nil {
		return n, err
	}
	for _, args := range [][]string{
		{"-n", f, "link", "add", "br0", "type", "bridge"},
		{"-n", f, "addr", "add", fabricAddr + "/24", "dev", "br0"},
		{"-n", f, "link", "set", "br0", "up"},
	} {
		if err := ip(ctx, args...); err != nil {
			return n, err
		}
	}
	for i := 1; i <= hosts; i++ {
		h := n.host(i)
		if err := add(h); err != nil {
			return n, err
		}
		veth := fmt.Sprintf("vh%d", i)
		for _, args := range [][]string{
			{"-n", f, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", h},
			{"-n", f, "link", "set", veth, "master", "br0", "up"},
			{"-n", h, "addr", "add", hostAddr(i) + "/24", "dev", "eth0"},
			{"-n", h, "link", "set", "eth0", "up"},
		} {
			if err := ip(ctx, args...); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// Close ends every process still inside the namespaces (there should be
// none once the hosts, nginx, the load and ssh are stopped: each one found
// is reported) and deletes the namespaces, which removes their links.
func (n *network) Close() error {
	var errs []error
	for i := len(n.made) - 1; i >= 0; i-- {
		name := n.made[i]
		// A host's last processes may still be on their way out.
		for deadline := time.Now().Add(3 * time.Second); len(pidsIn(name)) > 0 && time.Now().Before(deadline); {
			time.Sleep(100 * time.Millisecond)
		}
		if left := describePids(pidsIn(name)); left != "" && n.logf != nil {
			n.logf("network namespace %s still holds %s: killing them", name, left)
		}
		killIn(name)
		if err := ip(context.Background(), "netns", "del", name); err != nil {
			errs = append(errs, err)
		}
	}
	n.made = nil
	return errors.Join(errs...)
}

// killIn sends SIGKILL to every process in namespace name and waits up to
// 5 s for them to go; it returns how many there were.
func killIn(name string) int {
	pids := pidsIn(name)
	for _, p := range pids {
		syscall.Kill(p, syscall.SIGKILL)
	}
	for deadline := time.Now().Add(5 * time.Second); len(pidsIn(name)) > 0 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	return len(pids)
}

// describePids names processes: "pid (command line)", comma-separated.
func describePids(pids []int) string {
	var d []string
	for _, p := range pids {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p))
		d = append(d, fmt.Sprintf("%d (%s)", p, strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))))
	}
	return strings.Join(d, ", ")
}

func pidsIn(name string) []int {
	out, _ := exec.Command("ip", "netns", "pids", name).Output()
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if p, err := strconv.Atoi(f); err == nil && p != os.Getpid() {
			pids = append(pids, p)
		}
	}
	return pids
}

var leftover = regexp.MustCompile(`^` + nsPrefix + `([0-9]+)-`)

// removeLeftovers deletes the namespaces an earlier run of this test left
// behind when it was killed (its pid, in the name, is gone), with whatever
// still runs in them.
func removeLeftovers(logf func(string, ...any)) {
	des, _ := os.ReadDir("/run/netns")
	for _, de := range des {
		m := leftover.FindStringSubmatch(de.Name())
		if m == nil {
			continue
		}
		pid, _ := strconv.Atoi(m[1])
		if pid == os.Getpid() || syscall.Kill(pid, 0) == nil {
			continue // ours, or a run still going
		}
		k := killIn(de.Name())
		err := ip(context.Background(), "netns", "del", de.Name())
		logf("removed namespace %s left by an earlier run (%d processes killed, %v)", de.Name(), k, err)
	}
}
