package release

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/lodis/lodis/internal/buildinfo"
)

// ErrUntrusted is wrapped by the errors of Secure and openTrusted: a store
// or a file that a user other than root could have written.
var ErrUntrusted = errors.New("not root's alone")

// Secure makes sure root can trust the store before it writes to it; every
// command that writes as root calls it first, under the upgrade lock. It
// does nothing for another user (development and tests).
//
// Root, releases/, rejected/ and incoming/ must be directories (not links)
// that belong to root and that no group or other may write: otherwise
// Secure refuses with an error wrapping ErrUntrusted and saying how to mend
// it (systemd-tmpfiles sets them right). Missing subdirectories are made.
// Entries that an older lodis, whose store belonged to user lodis, left to
// that user are taken back when they are what they say — a release
// directory whose app hashes to its name, the bookkeeping files, the locks,
// a current link to a release in the store — and quarantined otherwise:
// moved to rejected/ with a reason, kept for inspection. Leftovers of an
// interrupted run (releases/.candidate-*, incoming/.taken-*) are
// quarantined too. notes says what was done, one line each.
func (s *Store) Secure() (notes []string, err error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{s.Root, 0o755}, {s.releasesDir(), 0o755}, {s.rejectedDir(), 0o750}, {s.IncomingDir(), 0o700}} {
		if err := trustedDir(d.path, d.mode, d.path != s.Root); err != nil {
			return notes, err
		}
	}
	quarantine := func(path, why string) {
		dst, err := s.quarantine(path, why)
		if err != nil {
			notes = append(notes, fmt.Sprintf("could not quarantine %s (%s): %v", path, why, err))
			return
		}
		notes = append(notes, fmt.Sprintf("quarantined %s as %s: %s", path, dst, why))
	}
	des, _ := os.ReadDir(s.releasesDir())
	for _, de := range des {
		p := filepath.Join(s.releasesDir(), de.Name())
		switch {
		case strings.HasPrefix(de.Name(), ".candidate-"):
			quarantine(p, "a candidate left over by an interrupted run")
		case !ownedByRoot(p):
			// Root's first, so that nobody else can change it while it is
			// checked; then it must be what its name says.
			if de.IsDir() && IsSHA256(de.Name()) && lchownTree(p) == nil && s.hashesTo(de.Name()) {
				notes = append(notes, "took back "+p+" from the user an older lodis gave it to")
				continue
			}
			quarantine(p, "not root's, and not a release whose app hashes to its name")
		}
	}
	des, _ = os.ReadDir(s.IncomingDir())
	for _, de := range des {
		if p := filepath.Join(s.IncomingDir(), de.Name()); strings.HasPrefix(de.Name(), ".taken-") {
			quarantine(p, "a drop left over by an interrupted run")
		}
	}
	des, _ = os.ReadDir(s.Root)
	for _, de := range des {
		p := filepath.Join(s.Root, de.Name())
		if ownedByRoot(p) {
			continue
		}
		switch name := de.Name(); {
		case name == "current":
			// mendCurrent, below, whoever owns it.
		case name == "releases.json" || name == "rollout.json" || name == "app.conf.applied" || strings.HasSuffix(name, ".lock"):
			// Their content is checked whenever it is read.
			if err := os.Lchown(p, 0, 0); err == nil && de.Type().IsRegular() {
				os.Chmod(p, 0o644)
				notes = append(notes, "took back "+p)
				continue
			}
			quarantine(p, "not a regular file")
		default:
			quarantine(p, "an entry lodis does not make, not root's")
		}
	}
	return s.mendCurrent(notes)
}

// mendCurrent makes sure current is a link root can trust, whoever made it:
// to a release the store holds, or, as tmpfiles.d makes it after an
// installation, to an installed binary (trustedInstalled). Anything else —
// no current at all, not a link, a link user lodis owns to outside the
// store, a link to a FIFO, a device, a file only root may read or one
// another user may write — is quarantined and current rebuilt: onto the
// release activated last that the store holds (not rejected), else onto
// the installed lodis (this binary). Running workers are untouched.
func (s *Store) mendCurrent(notes []string) ([]string, error) {
	link := s.currentLink()
	why := ""
	fi, err := os.Lstat(link)
	switch {
	case errors.Is(err, os.ErrNotExist):
		why = "missing"
	case err != nil:
		return notes, fmt.Errorf("store: %w", err)
	case fi.Mode()&os.ModeSymlink == 0:
		why = "not a symbolic link (" + fi.Mode().Type().String() + ")"
	default:
		if sha, ok := s.currentRelease(); ok {
			if ownedByRoot(link) {
				return notes, nil
			}
			if err := s.Activate(sha); err != nil {
				return notes, err
			}
			return append(notes, "made current root's again (it points at release "+buildinfo.ShortSHA(sha)+")"), nil
		}
		target, _ := os.Readlink(link)
		switch {
		case !ownedByRoot(link):
			why = "a link another user made, to " + clipName(target) + ", outside the store"
		case !filepath.IsAbs(target):
			why = "a relative link to " + clipName(target) + ", outside the store"
		default:
			if err := trustedInstalled(target); err != nil {
				why = "a link to " + err.Error()
			}
		}
	}
	if why == "" {
		return notes, nil
	}
	if fi == nil {
		notes = append(notes, "current: missing")
	} else if dst, err := s.quarantine(link, "current: "+why); err != nil {
		return notes, fmt.Errorf("store: quarantine current (%s): %w", why, err)
	} else {
		notes = append(notes, fmt.Sprintf("quarantined current as %s: %s", dst, why))
	}
	if sha := s.lastActivated(); sha != "" {
		if err := s.Activate(sha); err != nil {
			return notes, err
		}
		return append(notes, "rebuilt current onto release "+buildinfo.ShortSHA(sha)+", the last one activated"), nil
	}
	self, err := os.Executable()
	if err == nil {
		self, err = filepath.EvalSymlinks(self)
	}
	if err == nil {
		err = trustedInstalled(self)
	}
	if err == nil {
		err = s.link(self)
	}
	if err != nil {
		return notes, fmt.Errorf("store: rebuild current: %w", err)
	}
	return append(notes, "rebuilt current onto the installed "+self), nil
}

// trustedInstalled reports why the file at path cannot be what current
// points at outside the store (release one before its import, as tmpfiles.d
// links it): it must be a regular file (not a link, a FIFO or a device) of
// root's that no group or other may write and that every user may read and
// run, as a binary the package manager installed is. Importing a file only
// root may read would publish it: releases are world-readable.
func trustedInstalled(path string) error {
	f, err := openTrusted(path, true)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Mode().Perm()&0o005 != 0o005 {
		return fmt.Errorf("%s has mode %04o: not readable and executable by every user, as an installed binary is: %w", path, fi.Mode().Perm(), ErrUntrusted)
	}
	return nil
}

// lastActivated is the release of releases.json activated last that the
// store holds and that was not rejected; "" when none is known.
func (s *Store) lastActivated() string {
	st, err := s.load()
	if err != nil {
		return ""
	}
	best := ""
	var at time.Time
	for sha, r := range st.Releases {
		if r.Rejected == "" && !r.Activated.IsZero() && r.Activated.After(at) && s.Has(sha) {
			best, at = sha, r.Activated
		}
	}
	return best
}

// link points current at target (absolute, or relative to Root) with one
// atomic rename of a fresh link over the old one.
func (s *Store) link(target string) error {
	tmp := s.currentLink() + ".new"
	os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, s.currentLink()); err != nil {
		os.Remove(tmp)
		return err
	}
	syncDir(s.Root)
	return nil
}

// trustedDir checks that path is a directory only root can write, making it
// with mode when it is missing and make is set.
func trustedDir(path string, mode os.FileMode, make bool) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) && make {
		if err := os.Mkdir(path, mode); err != nil {
			return fmt.Errorf("store: %w", err)
		}
		return os.Chmod(path, mode)
	}
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	st, _ := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.IsDir():
		return fmt.Errorf("store: %s is not a directory (%s): %w; refusing to use it", path, fi.Mode().Type(), ErrUntrusted)
	case st == nil || st.Uid != 0 || fi.Mode().Perm()&0o022 != 0:
		return fmt.Errorf("store: %s belongs to uid %d with mode %04o: %w; only root may write it (run 'systemd-tmpfiles --create lodis.conf')",
			path, st.Uid, fi.Mode().Perm(), ErrUntrusted)
	}
	return nil
}

// ownedByRoot reports whether path (not followed) belongs to root.
func ownedByRoot(path string) bool {
	fi, err := os.Lstat(path)
	if err != nil {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && st.Uid == 0
}

// hashesTo reports whether release sha's app is a regular file with that
// SHA-256.
func (s *Store) hashesTo(sha string) bool {
	p := s.releasePath(sha)
	f, err := openTrusted(p, false)
	if err != nil {
		return false
	}
	f.Close()
	sum, err := buildinfo.FileSHA256(p)
	return err == nil && sum == sha
}

// currentRelease is the release current points at, when it is one in the
// store.
func (s *Store) currentRelease() (string, bool) {
	target, err := os.Readlink(s.currentLink())
	if err != nil {
		return "", false
	}
	if !filepath.IsAbs(target) {
		target = filepath.Join(s.Root, target)
	}
	sha, ok := s.shaOfPath(target)
	return sha, ok && s.Has(sha)
}

// lchownTree gives path and everything below it to root, following no link.
func lchownTree(path string) error {
	return filepath.Walk(path, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, 0, 0)
	})
}

// quarantine moves path into rejected/ with a reason file, and returns
// where it went.
func (s *Store) quarantine(path, why string) (string, error) {
	dir := filepath.Join(s.rejectedDir(), s.Now().UTC().Format("20060102T150405.000000000Z")+"-quarantine")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return "", err
	}
	dst := filepath.Join(dir, filepath.Base(path))
	if err := os.Rename(path, dst); err != nil {
		os.Remove(dir)
		return "", err
	}
	os.WriteFile(filepath.Join(dir, "reason"), []byte(why+"\n"), 0o640)
	return dst, nil
}

// openTrusted opens path for reading without following a final link or
// blocking on a FIFO, and checks that it is a regular file; as root (and
// with root set) also that it belongs to root and that no group or other
// may write it: a file root reads on the strength of where it lies must be
// root's alone. The error wraps ErrUntrusted for a file that fails those
// checks.
func openTrusted(path string, root bool) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, fmt.Errorf("%s is a symbolic link: %w", path, ErrUntrusted)
		}
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	st, _ := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.Mode().IsRegular():
		f.Close()
		return nil, fmt.Errorf("%s is not a regular file (%s): %w", path, fi.Mode().Type(), ErrUntrusted)
	case root && os.Geteuid() == 0 && (st == nil || st.Uid != 0 || fi.Mode().Perm()&0o022 != 0):
		f.Close()
		return nil, fmt.Errorf("%s belongs to uid %d with mode %04o: %w", path, st.Uid, fi.Mode().Perm(), ErrUntrusted)
	}
	// Reads must block as usual from here on.
	if err := syscall.SetNonblock(int(f.Fd()), false); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// hashTrusted is the SHA-256 of a file openTrusted accepts.
func hashTrusted(path string) (string, error) {
	f, err := openTrusted(path, true)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hash %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// ReleaseOf is the release process pid runs, read from what it executes:
// /proc/PID/exe when this process may read it (root), else — and for a
// script, whose exe is its interpreter — the first argument of
// /proc/PID/cmdline that is a release's path (workers start their release
// through its resolved path: lodis exec-app). "" when it runs none in the
// store, or is gone.
func (s *Store) ReleaseOf(pid int) string {
	proc := "/proc/" + strconv.Itoa(pid)
	if exe, err := os.Readlink(proc + "/exe"); err == nil {
		if sha, ok := s.shaOfPath(exe); ok {
			return sha
		}
	}
	b, err := os.ReadFile(proc + "/cmdline")
	if err != nil {
		return ""
	}
	for i, arg := range strings.Split(strings.TrimRight(string(b), "\x00"), "\x00") {
		if i > 3 {
			break // the interpreter, an option of its #! line, the script
		}
		if sha, ok := s.shaOfPath(arg); ok {
			return sha
		}
	}
	return ""
}

// Quarantine moves path — a state file or an entry of the store that root
// will not act on — into rejected/<time>-quarantine/ with a reason file,
// kept for inspection, and returns where it went.
func (s *Store) Quarantine(path, why string) (string, error) { return s.quarantine(path, why) }

// ErrTooLarge is wrapped by ReadStateFile's error for a file over its bound.
var ErrTooLarge = errors.New("too large")

// ReadStateFile reads a state file of the store (releases.json,
// rollout.json) without following a link or waiting on a FIFO — a file
// that is not regular is an error wrapping ErrUntrusted — and at most max
// bytes: more is an error wrapping ErrTooLarge. Its owner is Secure's
// business; its content is the caller's to check.
func ReadStateFile(path string, max int64) ([]byte, error) {
	f, err := openTrusted(path, false)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s: more than %d bytes: %w", path, max, ErrTooLarge)
	}
	return b, nil
}
