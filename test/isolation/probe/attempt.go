package main

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/lodis/lodis/test/isolation"
)

// attack makes every attempt, in a fixed order: the filesystem first (its
// files are then in place when the peer looks for them), the network, the
// kernel, privileges and namespaces last.
func attack(t target) []isolation.Attempt {
	var as []isolation.Attempt
	as = append(as, fileWrites(t)...)
	as = append(as, fileReads()...)
	as = append(as, procAttempts(t)...)
	as = append(as, peerAttempts(t)...)
	as = append(as, networkAttempts(t)...)
	as = append(as, kernelAttempts()...)
	as = append(as, privilegeAttempts()...)
	as = append(as, namespaceAttempts()...)
	as = append(as, deviceAttempts()...)
	return as
}

// result is an Attempt from the outcome of one operation: done when err is
// nil.
func result(group, name string, err error, detail string) isolation.Attempt {
	a := isolation.Attempt{Group: group, Name: name, Done: err == nil, Detail: detail}
	if err != nil {
		a.Errno = errnoName(err)
		if a.Detail == "" {
			a.Detail = err.Error()
		}
	}
	return a
}

// errnoName is the symbolic name of the errno inside err (EPERM, …), or the
// error text when there is none.
func errnoName(err error) string {
	var e unix.Errno
	if errors.As(err, &e) {
		if n := unix.ErrnoName(e); n != "" {
			return n
		}
		return fmt.Sprintf("errno %d", int(e))
	}
	return err.Error()
}

// raw turns a raw system call's errno into an error (nil for 0).
func raw(e unix.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

// scratchName is a file name the probe uses for files it creates.
func scratchName(n int) string {
	return fmt.Sprintf(".lodis-probe-%d-%d", os.Getpid(), n)
}
