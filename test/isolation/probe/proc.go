package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/lodis/lodis/test/isolation"
)

// textStart is where a static Go binary's code begins on amd64 (the probe
// and the lodis worker both are one): a known readable address in another
// worker's memory.
const textStart = 0x401000

func procAttempts(t target) []isolation.Attempt {
	var as []isolation.Attempt
	// Other processes in /proc.
	self := os.Getpid()
	names, err := readDirNames("/proc")
	var others []string
	for _, n := range names {
		pid, err := strconv.Atoi(n)
		if err != nil || pid == self {
			continue
		}
		comm, _ := os.ReadFile("/proc/" + n + "/comm")
		others = append(others, n+"("+strings.TrimSpace(string(comm))+")")
	}
	a := result("proc", "list other processes in /proc", err, "")
	if err == nil {
		a.Done = len(others) > 0
		if a.Done {
			a.Detail = fmt.Sprintf("%d others: %s", len(others), strings.Join(first(others, 10), " "))
		} else {
			a.Errno = "only itself"
		}
	}
	as = append(as, a)
	pids := []struct {
		label string
		pid   int
	}{{"PID 1 (root)", 1}}
	if t.peer > 0 {
		pids = append(pids, struct {
			label string
			pid   int
		}{"the other worker", t.peer})
	}
	for _, p := range pids {
		base := fmt.Sprintf("/proc/%d/", p.pid)
		for _, f := range []string{"environ", "maps", "cmdline", "status", "stat"} {
			as = append(as, readAttempt("proc", fmt.Sprintf("read %s's %s", p.label, f), base+f))
		}
		as = append(as, memAttempt(fmt.Sprintf("read %s's memory (/proc/PID/mem)", p.label), base+"mem"))
		as = append(as, readlinkAttempt(fmt.Sprintf("resolve %s's /proc/PID/exe", p.label), base+"exe"))
		as = append(as, openFDAttempt(fmt.Sprintf("open %s's fd 0 through /proc/PID/fd", p.label), base+"fd/0"))
	}
	// Kernel tunables and triggers.
	for _, p := range []string{"/proc/sys/kernel/hostname", "/proc/sys/vm/drop_caches", "/proc/sys/kernel/panic", "/proc/sysrq-trigger"} {
		as = append(as, writeOpen("kernel", "open "+p+" for writing", p))
	}
	for _, p := range []string{"/proc/kcore", "/proc/kmsg", "/proc/kallsyms", "/proc/modules", "/proc/mounts"} {
		a := readAttempt("proc", "read "+p, p)
		// Listed for the record: kallsyms shows zeroed addresses to
		// the unprivileged, modules and mounts are what `lsmod` and
		// `mount` print to any user.
		a.Info = p == "/proc/kallsyms" || p == "/proc/modules" || p == "/proc/mounts"
		as = append(as, a)
	}
	for _, p := range []string{"/sys/kernel/mm/transparent_hugepage/enabled", "/sys/power/state", "/sys/kernel/uevent_helper"} {
		as = append(as, writeOpen("kernel", "open "+p+" for writing", p))
	}
	as = append(as, cgroupAttempts()...)
	return as
}

// memAttempt opens a /proc/PID/mem and reads a few bytes of code from it.
func memAttempt(name, p string) isolation.Attempt {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return result("proc", name, err, "")
	}
	defer unix.Close(fd)
	b := make([]byte, 16)
	n, err := unix.Pread(fd, b, textStart)
	if err != nil {
		// Opened but not read: the open is already more than it may do.
		return result("proc", name, nil, "opened (read: "+errnoName(err)+")")
	}
	return result("proc", name, nil, fmt.Sprintf("read %d bytes at %#x: % x", n, textStart, b[:n]))
}

func readlinkAttempt(name, p string) isolation.Attempt {
	s, err := os.Readlink(p)
	return result("proc", name, err, "-> "+s)
}

func openFDAttempt(name, p string) isolation.Attempt {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err == nil {
		unix.Close(fd)
	}
	return result("proc", name, err, "")
}

// writeOpen opens p for writing, writes nothing and closes it.
func writeOpen(group, name, p string) isolation.Attempt {
	fd, err := unix.Open(p, unix.O_WRONLY|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err == nil {
		unix.Close(fd)
	}
	return result(group, name, err, "")
}

// cgroupAttempts try to leave or reshape the worker's control group: create
// a child group in it, and move itself to the root group.
func cgroupAttempts() []isolation.Attempt {
	own := ownCgroup()
	var as []isolation.Attempt
	for _, root := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd"} {
		if _, err := os.Stat(root + "/cgroup.procs"); err != nil {
			continue
		}
		dir := root + own
		as = append(as, result("kernel", "create a child control group in its own group under "+root, unix.Mkdir(dir+"/lodis-probe", 0o755), dir))
		as = append(as, writeOpen("kernel", "open "+root+"/cgroup.procs for writing (leave its group)", root+"/cgroup.procs"))
	}
	return as
}

// ownCgroup is the worker's group path from /proc/self/cgroup: the unified
// hierarchy's (0::) or else systemd's (name=systemd).
func ownCgroup() string {
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return "/"
	}
	defer f.Close()
	named := "/"
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[0] == "0" && parts[1] == "" {
			return parts[2]
		}
		if parts[1] == "name=systemd" {
			named = parts[2]
		}
	}
	return named
}
