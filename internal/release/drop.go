package release

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Drop is an app taken out of incoming/ for validation.
type Drop struct {
	Name    string      // its name in incoming/
	Path    string      // the file, moved to incoming/.taken-*
	SigPath string      // its signature, moved alongside; "" when none came
	Sig     []byte      // the signature's content; nil when none came
	Info    os.FileInfo // of the binary as dropped (mode, size)
	Waited  time.Duration
}

// DefaultSettle is how long a drop must stay unchanged, once no process has
// it open for writing, before Intake takes it: 250 ms. The kernel's answer on
// writers (a read lease) is what guards against a half-written copy; the
// settle time covers a writer that closes and opens the file again.
const DefaultSettle = 250 * time.Millisecond

// Intake takes drops out of an incoming directory.
//
// A drop is any file in incoming/ whose name does not start with "." (a
// name starting with "." is a copy in progress, to be renamed into place),
// with its detached signature beside it as NAME.sig when there is one.
// Drops are taken oldest first. A drop is taken only once it is complete:
// the file (and its .sig) is open for writing by no process — asked of the
// kernel with a read lease, F_SETLEASE(2), which is refused while any writer
// holds the file open, whichever namespace it runs in — and its size,
// modification time and inode have not changed for Settle. So a slow `cp`, a
// copy that stalls, or a file written in chunks is waited for, not validated
// half-written; renaming a finished file into place (the recommended way:
// copy to incoming/.NAME.tmp, then mv) is taken after Settle. A drop still
// being written after MaxWait — or a copy in progress never renamed — is
// taken anyway and reported as such, to be rejected: nothing is left behind
// to trigger the path unit again and again. On a file system without leases
// only the Settle rule applies.
type Intake struct {
	// Dir is the incoming directory.
	Dir string
	// Settle is how long a complete drop must stay unchanged; default
	// DefaultSettle.
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

// next returns the name of the drop to take now: the oldest file whose name
// starts with no "." and is no signature; "" when there is none. inProgress
// is the oldest copy in progress (a "." name), "" when none.
func (in *Intake) next() (name, inProgress string) {
	des, _ := os.ReadDir(in.Dir)
	var best, bestTmp time.Time
	for _, de := range des {
		n := de.Name()
		fi, err := de.Info()
		if err != nil || strings.HasPrefix(n, ".taken-") {
			continue
		}
		switch {
		case strings.HasPrefix(n, "."):
			if inProgress == "" || fi.ModTime().Before(bestTmp) {
				inProgress, bestTmp = n, fi.ModTime()
			}
		case strings.HasSuffix(n, ".sig"):
			if _, err := os.Lstat(filepath.Join(in.Dir, strings.TrimSuffix(n, ".sig"))); err != nil {
				// A signature alone is its own (bad) drop.
				if name == "" || fi.ModTime().Before(best) {
					name, best = n, fi.ModTime()
				}
			}
		default:
			if name == "" || fi.ModTime().Before(best) {
				name, best = n, fi.ModTime()
			}
		}
	}
	return name, inProgress
}

// Pending reports whether a drop is waiting in incoming/.
func (in *Intake) Pending() bool {
	name, _ := in.next()
	return name != ""
}

// Next waits until incoming/lodis is complete, moves it (and lodis.sig) to
// private names in the same directory, and returns it. It returns (nil, nil)
// when there is no drop. When the drop was still being written at MaxWait it
// is returned together with an *Invalid error wrapping ErrStillWriting.
func (in *Intake) Next(ctx context.Context) (*Drop, error) {
	settle, poll, maxWait := in.Settle, in.Poll, in.MaxWait
	if settle <= 0 {
		settle = DefaultSettle
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
	var lastName string
	stableSince := start
	told := false
	for {
		name, tmp := in.next()
		if name == "" && tmp == "" {
			return nil, nil
		}
		if name == "" {
			// Only a copy in progress: wait for it to be renamed into place.
			if time.Since(start) > maxWait {
				d, err := in.take(tmp, stateOf(filepath.Join(in.Dir, tmp)))
				if err != nil {
					return nil, err
				}
				d.Waited = time.Since(start)
				return d, &Invalid{Check: "file", Err: fmt.Errorf("%w: the copy in progress %s was never renamed into place within %s", ErrStillWriting, tmp, maxWait)}
			}
			if !told {
				told = true
				log.WithField("file", filepath.Join(in.Dir, tmp)).Info("waiting for the copy in progress to be renamed into place")
			}
		} else {
			bin, sig := filepath.Join(in.Dir, name), filepath.Join(in.Dir, name+".sig")
			cur := [2]fileState{stateOf(bin), stateOf(sig)}
			writer := openForWriting(bin) || (cur[1].exists && openForWriting(sig))
			if writer || cur != last || name != lastName {
				stableSince = time.Now()
				last, lastName = cur, name
			}
			if !writer && time.Since(stableSince) >= settle {
				d, err := in.take(name, cur[0])
				if d != nil {
					d.Waited = time.Since(start)
				}
				return d, err
			}
			if !told && (writer || time.Since(start) > settle) {
				told = true
				log.WithFields(logrus.Fields{"file": bin, "open_for_writing": writer, "size": cur[0].size}).
					Info("waiting for the drop to be complete")
			}
			if time.Since(start) > maxWait {
				d, err := in.take(name, cur[0])
				if err != nil {
					return nil, err
				}
				d.Waited = time.Since(start)
				return d, &Invalid{Check: "file", Err: fmt.Errorf("%w after %s (open for writing: %v, %d bytes so far)", ErrStillWriting, maxWait, writer, cur[0].size)}
			}
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
func (in *Intake) take(name string, st fileState) (*Drop, error) {
	tag := strconv.FormatInt(time.Now().UnixNano(), 10)
	bin, sig := filepath.Join(in.Dir, name), filepath.Join(in.Dir, name+".sig")
	d := &Drop{Name: name, Path: filepath.Join(in.Dir, ".taken-"+tag)}
	fi, err := os.Lstat(bin)
	if err != nil {
		return nil, fmt.Errorf("take drop: %w", err)
	}
	d.Info = fi
	if err := os.Rename(bin, d.Path); err != nil {
		return nil, fmt.Errorf("take drop: %w", err)
	}
	if st := stateOf(sig); st.exists && !strings.HasSuffix(name, ".sig") {
		sp := filepath.Join(in.Dir, ".taken-"+tag+".sig")
		if err := os.Rename(sig, sp); err == nil {
			d.SigPath = sp
			d.Sig = readSig(sp)
		}
	}
	return d, nil
}

// maxSig bounds what is read of a signature file: a real one is 64 bytes,
// or 89 in base64.
const maxSig = 4096

// readSig reads a signature without following a link or blocking on a
// FIFO; one that cannot be read is empty, which fails verification.
func readSig(path string) []byte {
	f, err := openTrusted(path, false)
	if err != nil {
		return []byte{}
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSig))
	if err != nil {
		return []byte{}
	}
	return b
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
