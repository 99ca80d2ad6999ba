package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/lodis/lodis/test/isolation"
)

// kernelAttempts: modules, the clock, the host name, the kernel log, BPF.
// A clock call that succeeded would set the time it just read, so the
// machine's clock moves by no more than the time between the two calls.
func kernelAttempts() []isolation.Attempt {
	var as []isolation.Attempt
	as = append(as, result("kernel", "load a kernel module (init_module)", unix.InitModule([]byte("\x7fELF not a module"), ""), ""))
	if f, err := os.Open("/proc/self/exe"); err == nil {
		as = append(as, result("kernel", "load a kernel module (finit_module)", unix.FinitModule(int(f.Fd()), "", 0), ""))
		f.Close()
	}
	as = append(as, result("kernel", "unload a kernel module (delete_module)", unix.DeleteModule("lodis_probe_none", unix.O_NONBLOCK), ""))

	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_REALTIME, &ts)
	as = append(as, result("kernel", "set the clock (clock_settime)", unix.ClockSettime(unix.CLOCK_REALTIME, &ts), ""))
	var tv unix.Timeval
	unix.Gettimeofday(&tv)
	as = append(as, result("kernel", "set the clock (settimeofday)", unix.Settimeofday(&tv), ""))
	var tx unix.Timex
	unix.Adjtimex(&tx) // modes 0: read
	tx.Modes = unix.ADJ_FREQUENCY
	_, err := unix.Adjtimex(&tx)
	as = append(as, result("kernel", "tune the clock (adjtimex ADJ_FREQUENCY)", err, ""))
	_, _, e := unix.Syscall(unix.SYS_CLOCK_ADJTIME, unix.CLOCK_REALTIME, uintptr(unsafe.Pointer(&tx)), 0)
	as = append(as, result("kernel", "tune the clock (clock_adjtime)", raw(e), ""))

	host, _ := os.Hostname()
	as = append(as, result("kernel", "set the host name (sethostname)", unix.Sethostname([]byte(host)), ""))
	as = append(as, result("kernel", "set the domain name (setdomainname)", unix.Setdomainname([]byte("(none)")), ""))
	buf := make([]byte, 256)
	_, err = unix.Klogctl(unix.SYSLOG_ACTION_READ_ALL, buf)
	as = append(as, result("kernel", "read the kernel log (syslog(2))", err, ""))
	as = append(as, bpfAttempts()...)
	as = append(as, result("kernel", "turn swap off (swapoff)", swapoff("/lodis-probe-none"), ""))
	return as
}

func swapoff(p string) error {
	b, err := unix.BytePtrFromString(p)
	if err != nil {
		return err
	}
	_, _, e := unix.Syscall(unix.SYS_SWAPOFF, uintptr(unsafe.Pointer(b)), 0, 0)
	return raw(e)
}

// bpfAttempts load a two-instruction socket filter and create an array
// map.
func bpfAttempts() []isolation.Attempt {
	insns := [2]uint64{0xb7, 0x95} // r0 = 0; exit
	license := []byte("GPL\x00")
	var attr [128]byte
	*(*uint32)(unsafe.Pointer(&attr[0])) = unix.BPF_PROG_TYPE_SOCKET_FILTER
	*(*uint32)(unsafe.Pointer(&attr[4])) = 2
	*(*uint64)(unsafe.Pointer(&attr[8])) = uint64(uintptr(unsafe.Pointer(&insns[0])))
	*(*uint64)(unsafe.Pointer(&attr[16])) = uint64(uintptr(unsafe.Pointer(&license[0])))
	fd, _, e := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_LOAD, uintptr(unsafe.Pointer(&attr[0])), uintptr(len(attr)))
	runtime.KeepAlive(&insns)
	runtime.KeepAlive(license)
	if e == 0 {
		unix.Close(int(fd))
	}
	as := []isolation.Attempt{result("kernel", "load a BPF program (bpf BPF_PROG_LOAD)", raw(e), "")}
	var m [128]byte
	*(*uint32)(unsafe.Pointer(&m[0])) = unix.BPF_MAP_TYPE_ARRAY
	*(*uint32)(unsafe.Pointer(&m[4])) = 4
	*(*uint32)(unsafe.Pointer(&m[8])) = 4
	*(*uint32)(unsafe.Pointer(&m[12])) = 1
	fd, _, e = unix.Syscall(unix.SYS_BPF, unix.BPF_MAP_CREATE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)))
	if e == 0 {
		unix.Close(int(fd))
	}
	return append(as, result("kernel", "create a BPF map (bpf BPF_MAP_CREATE)", raw(e), ""))
}

// privilegeAttempts try to become someone else or gain a capability. Each
// call is made on one locked thread; none can succeed without a capability.
func privilegeAttempts() []isolation.Attempt {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var as []isolation.Attempt
	rawCall := func(name string, trap uintptr, args ...uintptr) {
		a := [3]uintptr{}
		copy(a[:], args)
		_, _, e := unix.RawSyscall(trap, a[0], a[1], a[2])
		as = append(as, result("privilege", name, raw(e), ""))
	}
	rawCall("become root (setuid 0)", unix.SYS_SETUID, 0)
	rawCall("become root (setresuid 0 0 0)", unix.SYS_SETRESUID, 0, 0, 0)
	rawCall("join group root (setgid 0)", unix.SYS_SETGID, 0)
	rawCall("drop supplementary groups (setgroups 0)", unix.SYS_SETGROUPS, 0, 0)
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	unix.Capget(&hdr, &data[0])
	data[0].Effective, data[0].Permitted = 1<<unix.CAP_SYS_ADMIN, 1<<unix.CAP_SYS_ADMIN
	as = append(as, result("privilege", "raise CAP_SYS_ADMIN (capset)", unix.Capset(&hdr, &data[0]), ""))
	rawCall("raise an ambient capability (prctl PR_CAP_AMBIENT_RAISE CAP_NET_RAW)", unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_RAISE, unix.CAP_NET_RAW)
	as = append(as, result("privilege", "chroot", unix.Chroot(os.TempDir()), ""))
	dir := filepath.Join(os.TempDir(), scratchName(200))
	os.Mkdir(dir, 0o700)
	as = append(as, result("privilege", "mount a tmpfs", unix.Mount("tmpfs", dir, "tmpfs", 0, ""), ""))
	as = append(as, result("privilege", "bind-mount / elsewhere", unix.Mount("/", dir, "", unix.MS_BIND, ""), ""))
	as = append(as, result("privilege", "create a device node (mknod /dev/mem's numbers)", unix.Mknod(filepath.Join(os.TempDir(), scratchName(201)), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 1))), ""))
	as = append(as, result("privilege", "change a file's owner to root (chown)", unix.Chown(dir, 0, 0), ""))
	for _, ns := range []string{"mnt", "net", "pid"} {
		fd, err := unix.Open("/proc/1/ns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err == nil {
			err = unix.Setns(fd, 0)
			unix.Close(fd)
		}
		as = append(as, result("privilege", "enter PID 1's "+ns+" namespace (setns)", err, ""))
	}
	return as
}

// namespaceAttempts start children in new namespaces: a user namespace is
// the usual first step to capabilities, the others need one.
func namespaceAttempts() []isolation.Attempt {
	var as []isolation.Attempt
	for _, c := range []struct {
		name    string
		clone   uintptr
		unshare uintptr
	}{
		{"new user namespace (clone CLONE_NEWUSER)", unix.CLONE_NEWUSER, 0},
		{"new user and network namespace (clone)", unix.CLONE_NEWUSER | unix.CLONE_NEWNET, 0},
		{"new user namespace (unshare CLONE_NEWUSER)", 0, unix.CLONE_NEWUSER},
		{"new mount namespace (unshare CLONE_NEWNS)", 0, unix.CLONE_NEWNS},
		{"new network namespace (unshare CLONE_NEWNET)", 0, unix.CLONE_NEWNET},
	} {
		cmd := exec.Command("/proc/self/exe", "exit")
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: c.clone, Unshareflags: c.unshare}
		as = append(as, result("namespace", c.name, cmd.Run(), ""))
	}
	return as
}

// safeDevices are the device nodes every service has (DevicePolicy=closed
// allows them): opening them is no attack.
var safeDevices = map[string]bool{"/dev/null": true, "/dev/zero": true, "/dev/full": true, "/dev/random": true,
	"/dev/urandom": true, "/dev/tty": true, "/dev/ptmx": true, "/dev/pts/ptmx": true}

// deviceAttempts open named devices and every other device node in /dev
// (read-write, non-blocking; never a watchdog, which an open would arm).
func deviceAttempts() []isolation.Attempt {
	var as []isolation.Attempt
	named := []string{"/dev/mem", "/dev/kmem", "/dev/port", "/dev/kmsg", "/dev/vda", "/dev/sda", "/dev/nvme0n1",
		"/dev/rtc0", "/dev/net/tun", "/dev/fuse", "/dev/kvm", "/dev/loop-control", "/dev/console", "/dev/tty0",
		"/dev/hwrng", "/dev/cpu/0/msr", "/dev/vsock", "/dev/vhost-vsock"}
	for _, p := range named {
		as = append(as, openDevice("open "+p, p))
	}
	var nodes, opened []string
	filepath.WalkDir("/dev", func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() && (p == "/dev/shm" || p == "/dev/mqueue") {
			return filepath.SkipDir
		}
		if t := d.Type(); t&(os.ModeDevice|os.ModeCharDevice) != 0 {
			nodes = append(nodes, p)
			if !safeDevices[p] && !strings.Contains(p, "watchdog") && openDevice("", p).Done {
				opened = append(opened, p)
			}
		}
		return nil
	})
	sort.Strings(nodes)
	as = append(as, isolation.Attempt{Group: "device", Name: "device nodes in /dev", Info: true, Done: true,
		Detail: strings.Join(first(nodes, 24), " ")})
	a := isolation.Attempt{Group: "device", Name: "open any other device node in /dev read-write", Done: len(opened) > 0,
		Detail: strings.Join(first(opened, 12), " ")}
	if !a.Done {
		a.Errno = "none opened"
	}
	return append(as, a)
}

func openDevice(name, p string) isolation.Attempt {
	fd, err := unix.Open(p, unix.O_RDWR|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err == unix.EACCES || err == unix.EPERM || err == unix.EROFS {
		// Read-only access would still be a leak (/dev/kmsg, a disk).
		if fd2, err2 := unix.Open(p, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0); err2 == nil {
			unix.Close(fd2)
			return result("device", name, nil, "opened read-only")
		}
	}
	if err == nil {
		unix.Close(fd)
	}
	return result("device", name, err, "")
}
