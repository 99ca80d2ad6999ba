package release

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Drop is a binary taken out of incoming/ for validation.
type Drop struct {
	Path    string      // the binary, moved to incoming/.taken-*
	SigPath string      // its signature, moved alongside; "" when none came
	Sig     []byte      // the signature's content; nil when none came
	Info    os.FileInfo // of the binary as dropped (mode, size)
	Waited  time.Duration
}

// Intake takes drops out of an incoming directory.
//
// A drop is taken only once it is complete: the file incoming/lodis (and
// incoming/lodis.sig, if present) is open for writing by no process — asked of
// the kernel with a read lease, F_SETLEASE(2), which is refused while any
// writer holds the file open, whichever namespace it runs in — and its size,
// modification time and inode have not changed for Settle. So a slow `cp`, a
// copy that stalls, or a file written in chunks is waited for, not validated
// half-written; renaming a finished file into place (the recommended way:
// copy to incoming/.lodis.tmp, then mv) is taken after Settle. A drop still
// being written after MaxWait is taken anyway and reported as such, to be
// rejected: nothing is left behind to trigger the path unit again and again.
// On a file system without leases only the Settle rule applies.
type Intake struct {
	// Dir is the incoming directory.
	Dir string
	// Settle is how long a complete drop must stay unchanged; default 1 s.
	Settle time.Duration
	// Poll is how often the drop is looked at; default 100 ms.
	Poll time.Duration
	// MaxWait bounds the wait for a drop to be complete; default 5 min.
	MaxWait time.Duration
	// Log receives progress; default: discard.
	Log logrus.FieldLogger
}

// ErrStillWriting is wrapped by the error Next returns, with the taken drop,
// when the drop was still being written at MaxWait.
var ErrStillWriting = errors.New("still being written")

func (in *Intake) binPath() string { return filepath.Join(in.Dir, BinaryName) }
func (in *Intake) sigPath() string { return filepath.Join(in.Dir, BinaryName+".sig") }

// Pending reports whether a drop is waiting in incoming/.
func (in *Intake) Pending() bool {
	_, err := os.Lstat(in.binPath())
	return err == nil
}

// Next waits until incoming/lodis is complete, moves it (and lodis.sig) to
// private names in the same directory, and returns it. It returns (nil, nil)
// when there is no drop. When the drop was still being written at MaxWait it
// is returned together with an *Invalid error wrapping ErrStillWriting.
func (in *Intake) Next(ctx context.Context) (*Drop, error) {
	settle, poll, maxWait := in.Settle, in.Poll, in.MaxWait
	if settle <= 0 {
		settle = time.Second
	}
	if poll <= 0 {
		poll = 100 * time.Millisecond
	}
	if maxWait <= 0 {
		maxWait = 5 * time.Minute
	}
	log := in.Log
	if log == nil {
		l := logrus.New()
		l.SetOutput(discard{})
		log = l
	}
	start := time.Now()
	var last [2]fileState
	stableSince := start
	told := false
	for {
		cur := [2]fileState{stateOf(in.binPath()), stateOf(in.sigPath())}
		if !cur[0].exists {
			return nil, nil
		}
		writer := openForWriting(in.binPath()) || (cur[1].exists && openForWriting(in.sigPath()))
		if writer || cur != last {
			stableSince = time.Now()
			last = cur
		}
		if !writer && time.Since(stableSince) >= settle {
			d, err := in.take(cur[0])
			if d != nil {
				d.Waited = time.Since(start)
			}
			return d, err
		}
		if !told && (writer || time.Since(start) > settle) {
			told = true
			log.WithFields(logrus.Fields{"file": in.binPath(), "open_for_writing": writer, "size": cur[0].size}).
				Info("waiting for the drop to be complete")
		}
		if time.Since(start) > maxWait {
			d, err := in.take(cur[0])
			if err != nil {
				return nil, err
			}
			d.Waited = time.Since(start)
			return d, &Invalid{Check: "file", Err: fmt.Errorf("%w after %s (open for writing: %v, %d bytes so far)", ErrStillWriting, maxWait, writer, cur[0].size)}
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(poll):
		}
	}
}

// take renames the drop to private names so that a newer drop can arrive
// while this one is validated.
func (in *Intake) take(st fileState) (*Drop, error) {
	tag := strconv.FormatInt(time.Now().UnixNano(), 10)
	d := &Drop{Path: filepath.Join(in.Dir, ".taken-"+tag)}
	fi, err := os.Lstat(in.binPath())
	if err != nil {
		return nil, fmt.Errorf("take drop: %w", err)
	}
	d.Info = fi
	if err := os.Rename(in.binPath(), d.Path); err != nil {
		return nil, fmt.Errorf("take drop: %w", err)
	}
	if st := stateOf(in.sigPath()); st.exists {
		sp := filepath.Join(in.Dir, ".taken-"+tag+".sig")
		if err := os.Rename(in.sigPath(), sp); err == nil {
			d.SigPath = sp
			if b, err := os.ReadFile(sp); err == nil {
				d.Sig = b
			} else {
				d.Sig = []byte{} // present but unreadable: fails verification
			}
		}
	}
	return d, nil
}

// Remove deletes a taken drop (after it was accepted or found identical to
// the active release).
func (d *Drop) Remove() {
	os.Remove(d.Path)
	if d.SigPath != "" {
		os.Remove(d.SigPath)
	}
}

type fileState struct {
	exists bool
	size   int64
	mtime  time.Time
	ino    uint64
}

func stateOf(path string) fileState {
	fi, err := os.Lstat(path)
	if err != nil {
		return fileState{}
	}
	st := fileState{exists: true, size: fi.Size(), mtime: fi.ModTime()}
	if s, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.ino = s.Ino
	}
	return st
}

// openForWriting asks the kernel whether any process has path open for
// writing: a read lease (F_SETLEASE, F_RDLCK) is refused with EAGAIN exactly
// then. The lease is dropped at once. Any other failure (no leases on this
// file system, not a regular file) answers false: the settle time decides.
func openForWriting(path string) bool {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	_, err = unix.FcntlInt(uintptr(fd), unix.F_SETLEASE, unix.F_RDLCK)
	if err == nil {
		unix.FcntlInt(uintptr(fd), unix.F_SETLEASE, unix.F_UNLCK)
		return false
	}
	return errors.Is(err, unix.EAGAIN)
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
