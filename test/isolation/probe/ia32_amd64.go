package main

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The i386 system call numbers of socket(2) and connect(2).
const (
	sysIA32Socket  = 359
	sysIA32Connect = 362
)

// int80 makes a system call through the 32-bit entry (int $0x80).
func int80(trap, a1, a2, a3 uintptr) uintptr

// ia32Child is `probe ia32 ADDR`: it opens an IPv4 TCP socket and connects
// it to ADDR through the 32-bit entry, and prints "connected" or
// "errno NAME". The kernel kills it if it has no 32-bit emulation, or a
// seccomp filter may.
func ia32Child(args []string) int {
	if len(args) != 1 {
		fmt.Println("usage: probe ia32 ADDR")
		return 2
	}
	ap, err := netip.ParseAddrPort(args[0])
	if err != nil {
		fmt.Println(err)
		return 2
	}
	ret := func(r uintptr) (int, bool) {
		v := int32(uint32(r))
		if v < 0 {
			fmt.Println("errno " + unix.ErrnoName(unix.Errno(-v)))
			return 0, false
		}
		return int(v), true
	}
	fd, ok := ret(int80(sysIA32Socket, unix.AF_INET, unix.SOCK_STREAM, 0))
	if !ok {
		return 0
	}
	// The address must lie below 4 GiB for a 32-bit call to see it.
	mem, err := unix.Mmap(-1, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_32BIT)
	if err != nil {
		fmt.Println("mmap: " + err.Error())
		return 2
	}
	binary.NativeEndian.PutUint16(mem[0:], unix.AF_INET)
	binary.BigEndian.PutUint16(mem[2:], ap.Port())
	a4 := ap.Addr().As4()
	copy(mem[4:], a4[:])
	if _, ok := ret(int80(sysIA32Connect, uintptr(fd), addrOf(mem), 16)); !ok {
		return 0
	}
	fmt.Println("connected")
	os.Stdout.Sync()
	return 0
}

func addrOf(b []byte) uintptr { return uintptr(unsafe.Pointer(&b[0])) }
