package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/lodis/lodis/test/isolation"
)

// peerAttempts attack the other worker (and PID 1): signals, ptrace, memory
// reads without /proc, stealing its descriptors, profiling it; then tracing
// the probe's own child.
func peerAttempts(t target) []isolation.Attempt {
	var as []isolation.Attempt
	as = append(as, result("peer", "signal PID 1 (kill 0)", unix.Kill(1, 0), ""))
	if t.peer > 0 {
		p := t.peer
		// The app's workers share one user (they share its
		// StateDirectory=), and kill(2) decides by user: reported, not
		// judged (see peerSignal).
		as = append(as, peerSignal(result("peer", "signal the other worker (kill 0, the permission check of kill)", unix.Kill(p, 0), "")))
		as = append(as, ptraceAttempt("ptrace the other worker (PTRACE_ATTACH)", p, unix.PTRACE_ATTACH))
		as = append(as, ptraceAttempt("ptrace the other worker (PTRACE_SEIZE)", p, unix.PTRACE_SEIZE))
		as = append(as, vmReadAttempt(p))
		as = append(as, pidfdAttempts(p)...)
		as = append(as, perfAttempt("perf_event_open on the other worker", p, -1))
	}
	as = append(as, perfAttempt("perf_event_open on every process of CPU 0", -1, 0))
	as = append(as, perfAttempt("perf_event_open on itself", 0, -1))
	as = append(as, traceMeAttempt())
	as = append(as, keyAttempts(t)...)
	return as
}

// ptraceAttempt attaches to pid and, if that worked, detaches at once (from
// the same thread, as ptrace requires).
func ptraceAttempt(name string, pid, req int) isolation.Attempt {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, uintptr(req), uintptr(pid), 0, 0, 0, 0)
	if e == 0 {
		if req == unix.PTRACE_ATTACH {
			var ws unix.WaitStatus
			unix.Wait4(pid, &ws, unix.WALL, nil)
		}
		unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_DETACH, uintptr(pid), 0, 0, 0, 0)
		return result("peer", name, nil, "attached (and detached)")
	}
	return result("peer", name, e, "")
}

// vmReadAttempt reads the other worker's code with process_vm_readv.
func vmReadAttempt(pid int) isolation.Attempt {
	b := make([]byte, 16)
	local := []unix.Iovec{{Base: &b[0], Len: uint64(len(b))}}
	remote := []unix.RemoteIovec{{Base: textStart, Len: len(b)}}
	n, err := unix.ProcessVMReadv(pid, local, remote, 0)
	if err != nil {
		return result("peer", "read the other worker's memory (process_vm_readv)", err, "")
	}
	return result("peer", "read the other worker's memory (process_vm_readv)", nil, fmt.Sprintf("read %d bytes: % x", n, b[:n]))
}

// pidfdAttempts take a pidfd of the other worker (harmless by itself: any
// process may) and try to steal its listening socket (fd 3) with it, and to
// signal it through it.
func pidfdAttempts(pid int) []isolation.Attempt {
	pfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return []isolation.Attempt{result("peer", "steal the other worker's listening socket (pidfd_getfd)", err, "pidfd_open: "+err.Error())}
	}
	defer unix.Close(pfd)
	fd, err := unix.PidfdGetfd(pfd, 3, 0)
	a := result("peer", "steal the other worker's listening socket (pidfd_getfd)", err, "")
	if err == nil {
		unix.Close(fd)
		a.Detail = "got its fd 3"
	}
	b := peerSignal(result("peer", "signal the other worker through a pidfd (signal 0)", unix.PidfdSendSignal(pfd, 0, nil, 0), ""))
	return []isolation.Attempt{a, b}
}

// peerSignal marks a signal to the other worker as reported only: every
// worker of the app runs as the same user, so that they can share the app's
// state directory, and the kernel lets a process signal its own user's
// processes (systemd 252 has no PID namespace to stop it). A signal to a
// process of another user (PID 1) is judged.
func peerSignal(a isolation.Attempt) isolation.Attempt {
	a.Info = true
	if a.Done {
		a.Detail = "allowed: same user as this worker"
	}
	return a
}

// perfAttempt opens a software counter on pid (0: itself, -1: every
// process) and cpu (-1: any).
func perfAttempt(name string, pid, cpu int) isolation.Attempt {
	attr := unix.PerfEventAttr{Type: unix.PERF_TYPE_SOFTWARE, Config: unix.PERF_COUNT_SW_TASK_CLOCK,
		Bits: unix.PerfBitDisabled | unix.PerfBitExcludeKernel | unix.PerfBitExcludeHv}
	attr.Size = uint32(unsafe.Sizeof(attr))
	fd, err := unix.PerfEventOpen(&attr, pid, cpu, -1, unix.PERF_FLAG_FD_CLOEXEC)
	if err == nil {
		unix.Close(fd)
	}
	return result("peer", name, err, "")
}

// traceMeAttempt starts a child that asks to be traced (PTRACE_TRACEME)
// before it execs; if that works the child stops at its exec and is killed.
func traceMeAttempt() isolation.Attempt {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	c := exec.Command("/proc/self/exe", "exit")
	c.SysProcAttr = &syscall.SysProcAttr{Ptrace: true}
	err := c.Start()
	if err != nil {
		return result("peer", "trace its own child (PTRACE_TRACEME, then exec)", err, "")
	}
	// The child is stopped at its exec, traced by this thread: kill it and
	// reap it here (os/exec's Wait does not see a traced child's exit).
	unix.Kill(c.Process.Pid, unix.SIGKILL)
	var ws unix.WaitStatus
	unix.Wait4(c.Process.Pid, &ws, unix.WALL, nil)
	c.Process.Release()
	return result("peer", "trace its own child (PTRACE_TRACEME, then exec)", nil, "child traced")
}

// keyAttempts add a key to the probe's user keyring (which every process
// of the same user in the same user namespace shares) and look for the
// other worker's key there.
func keyAttempts(t target) []isolation.Attempt {
	desc := "lodis-probe-" + os.Getenv("LODIS_INSTANCE")
	_, err := unix.AddKey("user", desc, []byte("secret"), unix.KEY_SPEC_USER_KEYRING)
	a := result("peer", "add a key to its user keyring (keyctl)", err, "")
	// Adding to one's own keyring is no attack; finding the other
	// worker's key is.
	a.Info = true
	as := []isolation.Attempt{a}
	if t.key != "" {
		id, err := unix.KeyctlSearch(unix.KEY_SPEC_USER_KEYRING, "user", t.key, 0)
		as = append(as, result("peer", "find the other worker's key in the user keyring (keyctl search)", err, fmt.Sprintf("key %d", id)))
	}
	return as
}
