package main

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"runtime"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A minimal io_uring, one request at a time: just enough to open and
// connect a socket without the socket(2) and connect(2) system calls, which
// is what a seccomp filter such as RestrictAddressFamilies= watches.

const (
	opConnect = 16
	opSend    = 26
	opSocket  = 45

	offSQRing = 0
	offCQRing = 0x8000000
	offSQEs   = 0x10000000

	featSingleMmap = 1 << 0
	enterGetEvents = 1 << 0
)

// uringParams is struct io_uring_params.
type uringParams struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFD uint32
	resv                                                                   [3]uint32
	sqOff                                                                  struct {
		head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
		userAddr                                                        uint64
	}
	cqOff struct {
		head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
		userAddr                                                        uint64
	}
}

// sqe is struct io_uring_sqe (64 bytes).
type sqe struct {
	opcode, flags uint8
	ioprio        uint16
	fd            int32
	off           uint64
	addr          uint64
	len           uint32
	opFlags       uint32
	userData      uint64
	bufIndex      uint16
	personality   uint16
	fileIndex     uint32
	addr3         uint64
	pad           uint64
}

type ring struct {
	fd       int
	sq, cq   []byte
	sqes     []byte
	p        uringParams
	separate bool // cq is its own mapping
}

func newRing() (*ring, error) {
	r := &ring{}
	fd, _, e := unix.Syscall(unix.SYS_IO_URING_SETUP, 4, uintptr(unsafe.Pointer(&r.p)), 0)
	if e != 0 {
		return nil, e
	}
	r.fd = int(fd)
	sqSize := int(r.p.sqOff.array + r.p.sqEntries*4)
	cqSize := int(r.p.cqOff.cqes + r.p.cqEntries*16)
	if r.p.features&featSingleMmap != 0 {
		sqSize = max(sqSize, cqSize)
	}
	var err error
	if r.sq, err = unix.Mmap(r.fd, offSQRing, sqSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		unix.Close(r.fd)
		return nil, err
	}
	r.cq = r.sq
	if r.p.features&featSingleMmap == 0 {
		if r.cq, err = unix.Mmap(r.fd, offCQRing, cqSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
			r.close()
			return nil, err
		}
		r.separate = true
	}
	if r.sqes, err = unix.Mmap(r.fd, offSQEs, int(r.p.sqEntries)*64, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		r.close()
		return nil, err
	}
	return r, nil
}

func (r *ring) close() {
	if r.sqes != nil {
		unix.Munmap(r.sqes)
	}
	if r.separate {
		unix.Munmap(r.cq)
	}
	if r.sq != nil {
		unix.Munmap(r.sq)
	}
	unix.Close(r.fd)
}

func u32(b []byte, off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&b[off])) }

// do submits one request and waits for its completion; it returns the
// request's result (a negative errno is an error).
func (r *ring) do(s sqe) (int32, error) {
	tail := atomic.LoadUint32(u32(r.sq, r.p.sqOff.tail))
	idx := tail & *u32(r.sq, r.p.sqOff.ringMask)
	*(*sqe)(unsafe.Pointer(&r.sqes[idx*64])) = s
	*u32(r.sq, r.p.sqOff.array+idx*4) = idx
	atomic.StoreUint32(u32(r.sq, r.p.sqOff.tail), tail+1)
	_, _, e := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), 1, 1, enterGetEvents, 0, 0)
	if e != 0 {
		return 0, e
	}
	head := atomic.LoadUint32(u32(r.cq, r.p.cqOff.head))
	if head == atomic.LoadUint32(u32(r.cq, r.p.cqOff.tail)) {
		return 0, errors.New("io_uring: no completion")
	}
	cqe := r.p.cqOff.cqes + (head&*u32(r.cq, r.p.cqOff.ringMask))*16
	res := *(*int32)(unsafe.Pointer(&r.cq[cqe+8]))
	atomic.StoreUint32(u32(r.cq, r.p.cqOff.head), head+1)
	if res < 0 {
		return res, unix.Errno(-res)
	}
	return res, nil
}

func (r *ring) socket(domain, typ, protocol int) (int, error) {
	res, err := r.do(sqe{opcode: opSocket, fd: int32(domain), off: uint64(typ), len: uint32(protocol)})
	return int(res), err
}

func (r *ring) connect(fd int, ap netip.AddrPort) error {
	var sa [16]byte // struct sockaddr_in
	binary.NativeEndian.PutUint16(sa[0:], unix.AF_INET)
	binary.BigEndian.PutUint16(sa[2:], ap.Port())
	a4 := ap.Addr().As4()
	copy(sa[4:], a4[:])
	_, err := r.do(sqe{opcode: opConnect, fd: int32(fd), addr: uint64(uintptr(unsafe.Pointer(&sa[0]))), off: uint64(len(sa))})
	runtime.KeepAlive(&sa)
	return err
}

func (r *ring) send(fd int, msg []byte) error {
	_, err := r.do(sqe{opcode: opSend, fd: int32(fd), addr: uint64(uintptr(unsafe.Pointer(&msg[0]))), len: uint32(len(msg))})
	runtime.KeepAlive(msg)
	return err
}
