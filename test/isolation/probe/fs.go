package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lodis/lodis/test/isolation"
)

// writeDirs are the places a file is tried in by name, on top of the walk.
var writeDirs = []string{"/", "/etc", "/usr", "/usr/local", "/usr/local/bin", "/var", "/var/lib",
	"/var/lib/lodis", "/var/lib/lodis/releases", "/var/lib/lodis/incoming", "/var/lib/private",
	"/var/log", "/var/cache", "/var/spool", "/var/mail", "/opt", "/srv", "/mnt", "/boot",
	"/home", "/root", "/run", "/run/lock", "/run/user", "/run/systemd", "/tmp", "/var/tmp", "/dev/shm", "/dev/mqueue"}

// walkBudget bounds the walk over the whole filesystem.
const walkBudget = 90 * time.Second

func fileWrites(t target) []isolation.Attempt {
	var as []isolation.Attempt
	for i, d := range writeDirs {
		p := filepath.Join(d, scratchName(i))
		err := create(p)
		a := result("filesystem", "create a file in "+d, err, "")
		if err == nil {
			a.Created, a.Private, a.Detail = []string{p}, true, "created "+p
		}
		as = append(as, a)
	}
	// Files the test put on the host side of shared places.
	for _, m := range isolation.HostMarkers {
		_, err := os.Lstat(m)
		as = append(as, result("filesystem", "see the host's "+filepath.Dir(m)+" (a file the test put there)", err, ""))
	}
	// The other worker's files, if it made any.
	for _, p := range t.look {
		_, err := os.Lstat(p)
		as = append(as, result("peer", "see a file the other worker wrote: "+p, err, ""))
	}
	// A hard link to a file of another owner in a writable place (the
	// classic way to pin or take over a root file), and a set-user-ID file.
	tmp := filepath.Join(os.TempDir(), scratchName(100))
	as = append(as, result("filesystem", "hard-link /etc/passwd into "+os.TempDir(), unix.Link("/etc/passwd", tmp), ""))
	own := filepath.Join(os.TempDir(), scratchName(101))
	if err := create(own); err == nil {
		as = append(as, result("privilege", "make a file set-user-ID (chmod 4755)", unix.Chmod(own, 0o4755), ""))
	}
	if t.walk {
		as = append(as, walk()...)
	}
	return as
}

// create makes a new file at p (never following a symlink, never touching an
// existing file) and writes a line to it.
func create(p string) error {
	fd, err := unix.Open(p, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	_, err = unix.Write(fd, []byte("lodis isolation probe\n"))
	return err
}

func fileReads() []isolation.Attempt {
	var as []isolation.Attempt
	for _, d := range []string{"/root", "/home", "/var/lib/lodis/incoming", "/var/lib/private", "/var/log/journal"} {
		names, err := readDirNames(d)
		if d == "/var/lib/private" {
			// DynamicUser= shows a worker its own state directory there.
			names = slices.DeleteFunc(names, func(n string) bool { return n == filepath.Base(os.Getenv("STATE_DIRECTORY")) })
		}
		a := result("read", "list "+d, err, "")
		if err == nil {
			if len(names) == 0 {
				// An empty listing of a place that has entries on the
				// host is a private copy: it held.
				a.Done, a.Errno = false, "empty (or only its own)"
			} else {
				a.Detail = "entries: " + strings.Join(first(names, 8), " ")
			}
		}
		// Any user may list the journal's directory on Debian (its
		// files are the journal group's): for the record.
		a.Info = d == "/var/log/journal"
		as = append(as, a)
	}
	paths := []string{"/etc/shadow", "/etc/gshadow", "/etc/ssh/ssh_host_ed25519_key", "/etc/ssh/ssh_host_rsa_key"}
	for _, s := range isolation.Secrets {
		paths = append(paths, s.Path)
	}
	for _, p := range paths {
		as = append(as, readAttempt("read", "read "+p, p))
	}
	return as
}

// readAttempt opens p and reads from it.
func readAttempt(group, name, p string) isolation.Attempt {
	f, err := os.Open(p)
	if err != nil {
		return result(group, name, err, "")
	}
	defer f.Close()
	b := make([]byte, 64)
	n, err := f.Read(b)
	if err != nil && n == 0 {
		return result(group, name, err, "")
	}
	return result(group, name, nil, fmt.Sprintf("read %d bytes: %q", n, b[:min(n, 24)]))
}

func readDirNames(d string) ([]string, error) {
	f, err := os.Open(d)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

func first(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], fmt.Sprintf("… (%d in all)", len(s)))
	}
	return s
}

// walk visits every directory of the filesystem but /proc, /sys and /dev
// (their own attempts cover them), tries to create a file in each, and
// checks every existing file and socket for write access. It reports the
// directories it could write to, the existing files it could open for
// writing, and the AF_UNIX sockets it could connect to.
func walk() []isolation.Attempt {
	start := time.Now()
	var dirs, files, denied int
	var created, writable, fifos, sockets []string
	nCreated, nWritable := 0, 0
	truncated := false
	queue := []string{"/"}
	for len(queue) > 0 {
		if time.Since(start) > walkBudget {
			truncated = true
			break
		}
		d := queue[0]
		queue = queue[1:]
		dirs++
		p := filepath.Join(d, scratchName(1000+dirs))
		if unix.Access(d, unix.W_OK) == nil {
			if nCreated < isolation.MaxCreated {
				if create(p) == nil {
					created = append(created, p)
					nCreated++
				}
			} else {
				nCreated++ // counted, not created: enough evidence
			}
		}
		ents, err := os.ReadDir(d)
		if err != nil {
			denied++
			continue
		}
		for _, e := range ents {
			full := filepath.Join(d, e.Name())
			switch t := e.Type(); {
			case t.IsDir():
				if full == "/proc" || full == "/sys" || full == "/dev" {
					continue
				}
				queue = append(queue, full)
			case t.IsRegular():
				files++
				if unix.Access(full, unix.W_OK) != nil || strings.HasPrefix(e.Name(), ".lodis-probe-") {
					continue
				}
				// Access says yes: prove it by opening for writing
				// (appending nothing).
				fd, err := unix.Open(full, unix.O_WRONLY|unix.O_APPEND|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
				if err == nil {
					unix.Close(fd)
					if nWritable < isolation.MaxCreated {
						writable = append(writable, full)
					}
					nWritable++
				}
			case t&os.ModeSocket != 0:
				if unix.Access(full, unix.W_OK) == nil && connectUnix(full) == nil {
					sockets = append(sockets, full)
				}
			case t&os.ModeNamedPipe != 0:
				if unix.Access(full, unix.W_OK) == nil {
					fifos = append(fifos, full)
				}
			}
		}
	}
	summary := fmt.Sprintf("%d directories, %d files in %.1f s (%d directories unreadable)", dirs, files, time.Since(start).Seconds(), denied)
	if truncated {
		summary += fmt.Sprintf("; stopped after %s with %d directories left", walkBudget, len(queue))
	}
	sort.Strings(sockets)
	var as []isolation.Attempt
	a := isolation.Attempt{Group: "filesystem", Name: "create a file in any directory (walk of the whole tree)",
		Done: nCreated > 0, Created: created, Private: true}
	a.Detail = fmt.Sprintf("%d writable directories; %s", nCreated, summary)
	if nCreated == 0 {
		a.Errno = "none writable"
	}
	as = append(as, a)
	w := isolation.Attempt{Group: "filesystem", Name: "open an existing file for writing (walk of the whole tree)",
		Done: nWritable > 0, Created: writable, Private: true}
	w.Detail = fmt.Sprintf("%d writable files: %s", nWritable, strings.Join(first(writable, 8), " "))
	if nWritable == 0 {
		w.Errno = "none writable"
	}
	as = append(as, w)
	if truncated {
		as = append(as, isolation.Attempt{Group: "filesystem", Name: "walk the whole tree within " + walkBudget.String(), Done: true, Detail: summary})
	}
	as = append(as, isolation.Attempt{Group: "filesystem", Name: "writable named pipes", Info: true, Done: len(fifos) > 0,
		Detail: strings.Join(first(fifos, 8), " "), Errno: "none"})
	as = append(as, isolation.Attempt{Group: "network", Name: "AF_UNIX sockets it can connect to", Info: true, Done: len(sockets) > 0,
		Detail: strings.Join(first(sockets, 12), " "), Errno: "none"})
	return as
}

// connectUnix connects to the AF_UNIX socket at p (stream, then datagram)
// and hangs up at once.
func connectUnix(p string) error {
	var err error
	for _, typ := range []int{unix.SOCK_STREAM, unix.SOCK_DGRAM, unix.SOCK_SEQPACKET} {
		fd, e := unix.Socket(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
		if e != nil {
			return e
		}
		err = unix.Connect(fd, &unix.SockaddrUnix{Name: p})
		unix.Close(fd)
		if err == nil || err == unix.EAGAIN || err == unix.EINPROGRESS {
			return nil
		}
		if err != unix.EPROTOTYPE {
			return err
		}
	}
	return err
}
