// Package drop is `lodis drop`: it puts a release into the drop directory
// (/var/lib/lodis/incoming) the safe way, and with --wait follows it until
// it is rolled out or refused, so that a script — an Ansible task rolling a
// release across hosts, for one — learns the outcome from the exit status.
//
// The drop, in order: FILE is read and hashed into a temporary file in the
// drop directory whose name starts with '.' (which no watcher takes), synced,
// and linked to its final name, incoming/NAME (FILE's own name), in one
// step: link(2) never
// replaces an existing drop, so a drop already pending is refused and kept,
// never overwritten. The signature (FILE.sig when it exists, or --sig PATH)
// goes in first the same way, as incoming/NAME.sig, so that it is there
// when the binary is taken.
//
// With --wait it then reads, every 250 ms, what lodis upgrade and the
// supervisor record: the release store (`lodis releases`) and the roll-out
// state file (rollout.json). The release is identified by the SHA-256 of the
// bytes dropped, and only records made after the drop count:
//
//   - the roll-out to that release is in phase done and the release is the
//     active one: exit 0;
//   - the release was the active one already when it was dropped (lodis
//     upgrade took the drop and changed nothing): exit 0;
//   - the release was refused by validation, or its roll-out rolled back or
//     failed: exit 1, with the reason;
//   - none of these within --timeout (default 15m): exit 1, saying what was
//     seen last (a drop still in incoming/ means nothing takes drops here:
//     is lodis-upgrade.path active?).
//
// Exit status 2 is bad usage, which drops nothing: a bad flag or argument,
// FILE missing, empty or not a regular file, a caller other than root (the
// drop directory is root's). Status 1 also covers a drop that could not be
// made: a drop already pending, no drop directory (lodis not installed), an
// I/O error. Without --wait the exit status only says the drop was made.
package drop

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/lodis/lodis/internal/buildinfo"
	"github.com/lodis/lodis/internal/cli"
	"github.com/lodis/lodis/internal/release"
)

// DefaultTimeout bounds --wait when --timeout is not given.
const DefaultTimeout = 15 * time.Minute

// Exit statuses of lodis drop.
const (
	ExitDone     = 0 // dropped; with --wait: rolled out (or active already)
	ExitRejected = 1 // refused, rolled back, timed out, or the drop could not be made
	ExitUsage    = 2 // bad usage: nothing was dropped
)

const usage = "lodis drop [--wait] [--timeout 15m] [--sig PATH] [--root DIR] FILE"

// Config is what lodis drop is told by its flags.
type Config struct {
	File    string        // the release to drop
	Sig     string        // its detached signature; "" means FILE.sig when that exists
	Root    string        // release store; default release.DefaultRoot
	Wait    bool          // follow the release until it is rolled out or refused
	Timeout time.Duration // bound on Wait; default DefaultTimeout
	// Poll is the pause between two looks at the store; default 250 ms.
	Poll time.Duration
}

// env is what Main takes from the process; tests replace it.
type env struct {
	euid   func() int
	now    func() time.Time
	stderr io.Writer
}

// Main is `lodis drop`; see the package documentation.
func Main(args []string, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return run(ctx, args, env{euid: os.Geteuid, now: time.Now, stderr: stderr})
}

func run(ctx context.Context, args []string, e env) int {
	c, code, ok := parse(args, e.stderr)
	if !ok {
		return code
	}
	fail := func(code int, format string, a ...any) int {
		fmt.Fprintf(e.stderr, "lodis drop: "+format+"\n", a...)
		return code
	}
	if e.euid() != 0 {
		return fail(ExitUsage, "must run as root: the drop directory %s is root's", release.NewStore(c.Root).IncomingDir())
	}
	d, err := c.open()
	if err != nil {
		return fail(ExitUsage, "%v", err)
	}
	defer d.close()
	since := e.now()
	// Whether the release is the active one already decides what a taken
	// drop with no roll-out means; it is read before the drop, as lodis
	// upgrade compares it when it takes it.
	activeBefore := ""
	if l, err := release.NewStore(c.Root).List(); err == nil {
		activeBefore = l.Active
	}
	if err := d.put(); err != nil {
		return fail(ExitRejected, "%v", err)
	}
	fmt.Fprintf(e.stderr, "lodis drop: dropped %s (sha256 %s) as %s\n", c.File, buildinfo.ShortSHA(d.sha), d.final)
	if !c.Wait {
		return ExitDone
	}
	w := &waiter{cfg: c, sha: d.sha, since: since, wasActive: activeBefore == d.sha, dropped: d.dropped, final: d.final, now: e.now, out: e.stderr}
	return w.run(ctx)
}

// parse reads the flags, which may come before or after FILE. ok is false
// when the command must end with code (after -h: 0).
func parse(args []string, stderr io.Writer) (c Config, code int, ok bool) {
	fs := flag.NewFlagSet("lodis drop", flag.ContinueOnError)
	fs.BoolVar(&c.Wait, "wait", false, "follow the release until it is rolled out (exit 0) or refused, rolled back or timed out (exit 1)")
	fs.DurationVar(&c.Timeout, "timeout", DefaultTimeout, "with --wait: give up after this long")
	fs.StringVar(&c.Sig, "sig", "", "detached signature to drop with FILE (default: FILE.sig when it exists)")
	fs.StringVar(&c.Root, "root", release.DefaultRoot, "release store directory (the drop goes to its incoming/)")
	// The flags stop at FILE; the rest may hold more flags. A bad flag is
	// parsed again by cli.Parse, which says it (or prints the usage) its way.
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	switch {
	case err != nil:
		err = cli.Parse(fs, args, usage, stderr)
	case fs.NArg() > 0:
		c.File = fs.Arg(0)
		err = cli.Parse(fs, fs.Args()[1:], usage, stderr)
	}
	if err != nil {
		return c, cli.Exit("lodis drop", err, stderr), false
	}
	fail := func(format string, a ...any) (Config, int, bool) {
		fmt.Fprintf(stderr, "lodis drop: "+format+"\n", a...)
		return c, ExitUsage, false
	}
	switch {
	case c.File == "":
		return fail("want the FILE to drop (usage: %s)", usage)
	case c.Timeout <= 0:
		return fail("bad -timeout %v: want a positive duration such as 15m", c.Timeout)
	case c.Root == "":
		return fail("bad -root: empty")
	}
	c.Poll = 250 * time.Millisecond
	return c, 0, true
}

// source is one file to drop, open for reading.
type source struct {
	path string
	f    *os.File
	size int64
}

// dropping is a drop being made: the binary and its signature, open.
type dropping struct {
	dir, final string
	bin        source
	sig        *source
	sha        string      // of the binary, known once it is copied
	dropped    os.FileInfo // the final file as linked, to recognise it later
}

// open checks FILE and the signature and opens them.
func (c Config) open() (*dropping, error) {
	d := &dropping{dir: release.NewStore(c.Root).IncomingDir()}
	name := strings.TrimLeft(filepath.Base(c.File), ".")
	if name == "" || strings.HasSuffix(name, ".sig") {
		name = release.BinaryName // a name the intake would not take as a drop
	}
	d.final = filepath.Join(d.dir, name)
	bin, err := openSource(c.File)
	if err != nil {
		return nil, err
	}
	d.bin = *bin
	sig := c.Sig
	if sig == "" {
		if _, err := os.Stat(c.File + ".sig"); err == nil {
			sig = c.File + ".sig"
		}
	}
	if sig != "" {
		if d.sig, err = openSource(sig); err != nil {
			d.close()
			return nil, err
		}
	}
	return d, nil
}

func openSource(path string) (*source, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err // *PathError names the file
	}
	fi, err := f.Stat()
	switch {
	case err != nil:
		f.Close()
		return nil, err
	case !fi.Mode().IsRegular():
		f.Close()
		return nil, fmt.Errorf("%s is not a regular file (%s)", path, fi.Mode().Type())
	case fi.Size() == 0:
		f.Close()
		return nil, fmt.Errorf("%s is empty", path)
	}
	return &source{path: path, f: f, size: fi.Size()}, nil
}

func (d *dropping) close() {
	d.bin.f.Close()
	if d.sig != nil {
		d.sig.f.Close()
	}
}

// put makes the drop: the signature first, then the binary, each copied to a
// hidden temporary name and linked into place without replacing anything.
func (d *dropping) put() error {
	fi, err := os.Stat(d.dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("no drop directory %s: is lodis installed here?", d.dir)
	case err != nil:
		return err
	case !fi.IsDir():
		return fmt.Errorf("drop directory %s is not a directory", d.dir)
	}
	for _, p := range []string{d.final, d.final + ".sig"} {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("a drop is pending: %s exists; wait until lodis upgrade has taken it (nothing was changed)", p)
		}
	}
	var sigInfo os.FileInfo
	if d.sig != nil {
		if sigInfo, _, err = place(d.sig.f, d.dir, d.final+".sig", 0o644); err != nil {
			return fmt.Errorf("drop signature %s: %w", d.sig.path, err)
		}
	}
	var sum []byte
	d.dropped, sum, err = place(d.bin.f, d.dir, d.final, 0o755)
	if err != nil {
		if sigInfo != nil {
			removeIfSame(d.final+".sig", sigInfo)
		}
		return fmt.Errorf("drop %s: %w", d.bin.path, err)
	}
	d.sha = hex.EncodeToString(sum)
	return nil
}

// place copies r to a new hidden file in dir, syncs it, and links it to
// final, which must not exist; it returns the final file's info and the
// SHA-256 of what was written.
func place(r io.Reader, dir, final string, perm os.FileMode) (os.FileInfo, []byte, error) {
	f, err := os.CreateTemp(dir, "."+filepath.Base(final)+".drop-")
	if err != nil {
		return nil, nil, err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	h := sha256.New()
	_, err = io.Copy(io.MultiWriter(f, h), r)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, nil, err
	}
	if err := os.Link(tmp, final); err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil, nil, fmt.Errorf("a drop is pending: %s appeared meanwhile; it was kept, nothing was dropped", final)
		}
		return nil, nil, err
	}
	fi, err := os.Lstat(final)
	if err != nil {
		return nil, nil, err
	}
	syncDir(dir)
	return fi, h.Sum(nil), nil
}

// removeIfSame removes path when it is still the file fi describes.
func removeIfSame(path string, fi os.FileInfo) {
	if cur, err := os.Lstat(path); err == nil && os.SameFile(cur, fi) {
		os.Remove(path)
	}
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}
