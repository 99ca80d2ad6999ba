// Package release keeps app releases content-addressed on disk and switches
// the active one atomically.
//
// Layout under Store.Root (default /var/lib/lodis, made by units/lodis.tmpfiles):
//
//	releases/<sha256>/app     every accepted app, named by its SHA-256 (app.sig: its signature)
//	current                   symlink to the active release; workers run it (lodis exec-app)
//	incoming/NAME             a drop: copy an app here to upgrade (see Intake)
//	rejected/<time>-<sha12>/  refused drops and releases: the file as dropped and a "reason" file
//	releases.json             bookkeeping: metadata, previous release, rejections
//	rollout.json              the roll-out under way, or the last one (package rollout)
//	app.conf.applied          the last good /etc/lodis/app.conf (package appconf)
//	.lock, .upgrade.lock, .rollout.lock   flocks (see Store.Lock)
//
// The store belongs to root, and only root writes it: the upgrade commands
// (lodis upgrade, lodis rollback) run as root; the supervisor, user lodis,
// only reads. Root never acts on what a less privileged user could have
// written: Secure, which every command that writes calls first, refuses a
// store whose directories are not root's alone, and takes back or
// quarantines what an older lodis (whose store belonged to user lodis) left
// behind; files are opened without following links, and checked for type
// and owner after they are opened.
//
// The active release is whatever current points at; releases.json only adds
// what the links cannot say (which release came before, why one was refused).
// Release one is the binary `make install` or the package installed: the first
// command that changes releases imports it (Store.ImportInstalled).
//
// Every change of releases.json happens under an exclusive flock on .lock, so
// concurrent lodis commands never lose each other's updates; upgrade and
// rollback commands are serialised by .upgrade.lock (Store.LockUpgrades),
// and whoever drives a roll-out holds .rollout.lock (package rollout).
package release

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/lodis/lodis/internal/buildinfo"
)

// DefaultRoot is where lodis keeps its releases.
const DefaultRoot = "/var/lib/lodis"

// BinaryName is the file name of the app inside a release directory.
const BinaryName = "app"

// legacyName is the file name an older lodis gave its releases (which were
// lodis itself); they are still read.
const legacyName = "lodis"

// Store is the release store under Root. The zero value is not usable: use
// NewStore. Methods are safe for concurrent use by several processes.
type Store struct {
	// Root is the store's directory; default DefaultRoot.
	Root string
	// Now tells the time; default time.Now.
	Now func() time.Time
	// Note, if set, is told what the store mended by itself (a corrupt
	// state file quarantined and rebuilt), one line each.
	Note func(msg string)
}

// NewStore returns the store at root ("" means DefaultRoot).
func NewStore(root string) *Store {
	if root == "" {
		root = DefaultRoot
	}
	return &Store{Root: root, Now: time.Now}
}

// Release is what the store knows about one accepted binary.
type Release struct {
	SHA256    string    `json:"sha256"`
	Version   string    `json:"version,omitempty"`
	Source    string    `json:"source"` // "installed", "incoming"
	Imported  time.Time `json:"imported"`
	Activated time.Time `json:"activated,omitzero"`
	// Rejected, when set, is why this release was refused after it was
	// accepted (a failed roll-out); it is not offered again.
	Rejected string `json:"rejected,omitempty"`
}

// Rejection records one refused drop or release.
type Rejection struct {
	SHA256  string    `json:"sha256,omitempty"`
	Version string    `json:"version,omitempty"`
	Stage   string    `json:"stage"` // "validation" or "rollout"
	Reason  string    `json:"reason"`
	Time    time.Time `json:"time"`
	Path    string    `json:"path,omitempty"` // where the refused file now lies
}

// state is releases.json.
type state struct {
	Previous string              `json:"previous,omitempty"`
	Releases map[string]*Release `json:"releases"`
	Rejected []Rejection         `json:"rejected"`
}

// maxStateFile bounds what is read of releases.json: 200 rejections and
// the releases of a store pruned to a few come to far less.
const maxStateFile = 16 << 20

// maxRejections bounds the rejection history kept in releases.json.
const maxRejections = 200

// Paths.
func (s *Store) releasesDir() string { return filepath.Join(s.Root, "releases") }
func (s *Store) currentLink() string { return filepath.Join(s.Root, "current") }
func (s *Store) stateFile() string   { return filepath.Join(s.Root, "releases.json") }
func (s *Store) rejectedDir() string { return filepath.Join(s.Root, "rejected") }
func (s *Store) IncomingDir() string { return filepath.Join(s.Root, "incoming") }

// releasePath is the app of release sha: releases/<sha>/app, or the
// legacy releases/<sha>/lodis when only that exists.
func (s *Store) releasePath(sha string) string {
	p := filepath.Join(s.releasesDir(), sha, BinaryName)
	if _, err := os.Lstat(p); err != nil {
		if l := filepath.Join(s.releasesDir(), sha, legacyName); isRegular(l) {
			return l
		}
	}
	return p
}

// isRegular reports whether path is a regular file (not followed if a link).
func isRegular(path string) bool {
	fi, err := os.Lstat(path)
	return err == nil && fi.Mode().IsRegular()
}

// Path returns the binary of release sha.
func (s *Store) Path(sha string) string { return s.releasePath(sha) }

// CurrentLink is the path of the symlink the units run the worker through.
func (s *Store) CurrentLink() string { return s.currentLink() }

// Active returns the SHA-256 of the active release (the binary current points
// at) and that binary's path. The binary need not be in the store yet (release
// one before import): then its hash is computed, provided it is a regular
// file root could trust (openTrusted): never a FIFO, a device or a link.
func (s *Store) Active() (sha, path string, err error) {
	target, err := os.Readlink(s.currentLink())
	if err != nil {
		return "", "", fmt.Errorf("read %s: %w", s.currentLink(), err)
	}
	if !filepath.IsAbs(target) {
		target = filepath.Join(s.Root, target)
	}
	if sha, ok := s.shaOfPath(target); ok {
		return sha, target, nil
	}
	sha, err = hashTrusted(target)
	if err != nil {
		return "", target, fmt.Errorf("active binary: %w", err)
	}
	return sha, target, nil
}

// shaOfPath returns the release a path inside releases/ names.
func (s *Store) shaOfPath(p string) (string, bool) {
	rel, err := filepath.Rel(s.releasesDir(), filepath.Clean(p))
	if err != nil {
		return "", false
	}
	dir, file := filepath.Split(rel)
	dir = strings.TrimSuffix(dir, "/")
	if (file != BinaryName && file != legacyName) || !IsSHA256(dir) {
		return "", false
	}
	return dir, true
}

// IsSHA256 reports whether s is a release name: a sha256 in 64 lowercase hex
// digits.
func IsSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// Has reports whether release sha is in the store: a regular file, not a
// link.
func (s *Store) Has(sha string) bool { return IsSHA256(sha) && isRegular(s.releasePath(sha)) }

// ImportInstalled makes the active binary release one when current points
// outside the store (as tmpfiles.d leaves it after installation): the binary
// is copied to releases/<sha>/lodis and current is flipped to that copy, which
// has the same content, so running workers need no restart. It does nothing
// when current already points into the store.
func (s *Store) ImportInstalled() (sha string, err error) {
	sha, path, err := s.Active()
	if err != nil {
		return "", err
	}
	if _, ok := s.shaOfPath(path); ok {
		return sha, nil
	}
	if err := trustedInstalled(path); err != nil {
		return "", fmt.Errorf("import installed binary: %w", err)
	}
	f, err := openTrusted(path, true)
	if err != nil {
		return "", fmt.Errorf("import installed binary: %w", err)
	}
	defer f.Close()
	c, err := s.Stage(f)
	if err != nil {
		return "", fmt.Errorf("import installed binary %s: %w", path, err)
	}
	if err := s.Commit(c, versionOf(c.SHA256), "installed"); err != nil {
		return "", err
	}
	if err := s.Activate(c.SHA256); err != nil {
		return "", err
	}
	return c.SHA256, nil
}

// versionOf is the version of release sha when it is this very binary, else
// "" (a binary's version is only learnt by running it, during validation).
func versionOf(sha string) string {
	if own, err := buildinfo.SHA256(); err == nil && own == sha {
		return buildinfo.Version
	}
	return ""
}

// Candidate is a binary copied into the store but not yet accepted: it lives
// in releases/.candidate-*/lodis, where no unit runs it.
type Candidate struct {
	Dir    string // the candidate directory
	Path   string // the binary inside it
	SHA256 string
	Size   int64
	// Sig, when not nil, is the detached signature that came with it,
	// kept beside the release as app.sig (see CheckPolicy).
	Sig []byte
}

// Stage copies r into a new candidate directory (mode 0755, binary 0755, both
// root's), hashing as it goes, and syncs it to disk. The copy is the store's
// own: a writer still holding the source open cannot change what is
// validated, and nobody but root can change it afterwards.
func (s *Store) Stage(r io.Reader) (*Candidate, error) {
	if err := os.MkdirAll(s.releasesDir(), 0o755); err != nil {
		return nil, fmt.Errorf("stage: %w", err)
	}
	dir, err := os.MkdirTemp(s.releasesDir(), ".candidate-")
	if err != nil {
		return nil, fmt.Errorf("stage: %w", err)
	}
	// Readable by all (a trial run executes it as the worker's user),
	// writable by root alone, as the whole store.
	if err := os.Chmod(dir, 0o755); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("stage: %w", err)
	}
	c := &Candidate{Dir: dir, Path: filepath.Join(dir, BinaryName)}
	c.SHA256, c.Size, err = copyHashed(c.Path, r, 0o755)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("stage: %w", err)
	}
	return c, nil
}

// Discard removes a candidate.
func (s *Store) Discard(c *Candidate) {
	if c != nil {
		os.RemoveAll(c.Dir)
	}
}

// Commit accepts a candidate: its directory becomes releases/<sha256>. When
// that release already exists the candidate is discarded. source says where it
// came from ("incoming", "installed").
func (s *Store) Commit(c *Candidate, version, source string) error {
	// What is committed is what was checked: the candidate is hashed again.
	if sum, err := buildinfo.FileSHA256(c.Path); err != nil || sum != c.SHA256 {
		return fmt.Errorf("accept release %s: the candidate changed since it was checked (now %s, %v)", buildinfo.ShortSHA(c.SHA256), buildinfo.ShortSHA(sum), err)
	}
	if c.Sig != nil {
		if err := os.WriteFile(c.Path+".sig", c.Sig, 0o644); err != nil {
			return fmt.Errorf("accept release %s: keep its signature: %w", buildinfo.ShortSHA(c.SHA256), err)
		}
	}
	final := filepath.Join(s.releasesDir(), c.SHA256)
	if s.Has(c.SHA256) {
		s.Discard(c)
	} else {
		os.RemoveAll(final) // a half-made leftover, if any
		if err := os.Rename(c.Dir, final); err != nil {
			return fmt.Errorf("accept release %s: %w", buildinfo.ShortSHA(c.SHA256), err)
		}
		syncDir(s.releasesDir())
	}
	return s.update(func(st *state) error {
		r := st.Releases[c.SHA256]
		if r == nil {
			r = &Release{SHA256: c.SHA256, Imported: s.Now().UTC()}
			st.Releases[c.SHA256] = r
		}
		r.Source = source
		if version != "" {
			r.Version = version
		}
		return nil
	})
}

// Activate points current at release sha with one atomic rename of a fresh
// symlink over the old one: a worker started at any moment runs either the
// old or the new binary, never neither. Nothing is restarted.
func (s *Store) Activate(sha string) error {
	if !s.Has(sha) {
		return fmt.Errorf("activate %s: no such release in %s", buildinfo.ShortSHA(sha), s.releasesDir())
	}
	target, err := filepath.Rel(s.Root, s.releasePath(sha)) // relative to Root
	if err != nil {
		return fmt.Errorf("activate %s: %w", buildinfo.ShortSHA(sha), err)
	}
	if err := s.link(target); err != nil {
		return fmt.Errorf("activate %s: %w", buildinfo.ShortSHA(sha), err)
	}
	return s.update(func(st *state) error {
		if r := st.Releases[sha]; r != nil {
			r.Activated = s.Now().UTC()
		}
		return nil
	})
}

// SetPrevious records sha as the release `lodis rollback` returns to.
func (s *Store) SetPrevious(sha string) error {
	return s.update(func(st *state) error { st.Previous = sha; return nil })
}

// Previous returns the release `lodis rollback` returns to, or "" when none.
func (s *Store) Previous() (string, error) {
	st, err := s.load()
	if err != nil {
		return "", err
	}
	return st.Previous, nil
}

// Release returns what the store knows of release sha (nil when unknown).
func (s *Store) Release(sha string) (*Release, error) {
	st, err := s.load()
	if err != nil {
		return nil, err
	}
	return st.Releases[sha], nil
}

// Reject moves a refused drop (the binary at path, and its signature sigPath
// when not "") to rejected/<time>-<sha12>/, writes the reason next to it, and
// records the rejection. It returns where the binary now lies.
func (s *Store) Reject(path, sigPath, sha, version, reason string) (string, error) {
	now := s.Now().UTC()
	tag := "unknown"
	if sha != "" {
		tag = buildinfo.ShortSHA(sha)
	}
	dir := filepath.Join(s.rejectedDir(), now.Format("20060102T150405.000000000Z")+"-"+tag)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return "", fmt.Errorf("reject: %w", err)
	}
	dst := filepath.Join(dir, BinaryName)
	if err := os.Rename(path, dst); err != nil {
		return "", fmt.Errorf("reject: move %s: %w", path, err)
	}
	if sigPath != "" {
		os.Rename(sigPath, filepath.Join(dir, BinaryName+".sig"))
	}
	if err := os.WriteFile(filepath.Join(dir, "reason"), []byte(reason+"\n"), 0o640); err != nil {
		return dst, fmt.Errorf("reject: write reason: %w", err)
	}
	return dst, s.update(func(st *state) error {
		st.addRejection(Rejection{SHA256: sha, Version: version, Stage: "validation", Reason: reason, Time: now, Path: dst})
		return nil
	})
}

// MarkRejected refuses an accepted release after the fact (a roll-out that
// failed its health checks): unless it is the active release, its directory
// moves from releases/ to rejected/<time>-<sha12>/ with a reason file (a
// worker still running it is unaffected: the file stays open), and it is
// recorded so that the same binary dropped again is refused at once.
func (s *Store) MarkRejected(sha, reason string) error {
	path := s.releasePath(sha)
	if active, _, err := s.Active(); err == nil && active != sha && s.Has(sha) {
		now := s.Now().UTC()
		dir := filepath.Join(s.rejectedDir(), now.Format("20060102T150405.000000000Z")+"-"+buildinfo.ShortSHA(sha))
		if err := os.MkdirAll(s.rejectedDir(), 0o750); err == nil && os.Rename(filepath.Dir(path), dir) == nil {
			os.Chmod(dir, 0o750)
			path = filepath.Join(dir, BinaryName)
			os.WriteFile(filepath.Join(dir, "reason"), []byte(reason+"\n"), 0o640)
		}
	}
	return s.update(func(st *state) error {
		r := st.Releases[sha]
		if r == nil {
			r = &Release{SHA256: sha, Imported: s.Now().UTC(), Source: "unknown"}
			st.Releases[sha] = r
		}
		r.Rejected = reason
		st.addRejection(Rejection{SHA256: sha, Version: r.Version, Stage: "rollout", Reason: reason,
			Time: s.Now().UTC(), Path: path})
		if st.Previous == sha {
			st.Previous = ""
		}
		return nil
	})
}

func (st *state) addRejection(r Rejection) {
	st.Rejected = append(st.Rejected, r)
	if n := len(st.Rejected); n > maxRejections {
		st.Rejected = slices.Clone(st.Rejected[n-maxRejections:])
	}
}

// Entry is one line of `lodis releases`.
type Entry struct {
	SHA256    string    `json:"sha256"`
	Version   string    `json:"version,omitempty"`
	State     string    `json:"state"` // active, previous, available, rejected
	Source    string    `json:"source,omitempty"`
	Imported  time.Time `json:"imported,omitzero"`
	Activated time.Time `json:"activated,omitzero"`
	Reason    string    `json:"reason,omitempty"`
	Path      string    `json:"path,omitempty"`
}

// Listing is what `lodis releases` shows.
type Listing struct {
	Active   string      `json:"active"`
	Previous string      `json:"previous,omitempty"`
	Releases []Entry     `json:"releases"`
	Rejected []Rejection `json:"rejected"`
}

// List returns every release in the store (newest import first) and the
// rejection history (newest first). It only reads.
func (s *Store) List() (*Listing, error) {
	st, err := s.load()
	if err != nil {
		return nil, err
	}
	active, activePath, err := s.Active()
	if err != nil {
		return nil, err
	}
	l := &Listing{Active: active, Previous: st.Previous, Releases: []Entry{}, Rejected: []Rejection{}}
	des, err := os.ReadDir(s.releasesDir())
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("list releases: %w", err)
	}
	seen := false
	for _, de := range des {
		sha := de.Name()
		if !IsSHA256(sha) || !s.Has(sha) {
			continue
		}
		e := Entry{SHA256: sha, State: "available", Path: s.releasePath(sha)}
		if r := st.Releases[sha]; r != nil {
			e.Version, e.Source, e.Imported, e.Activated, e.Reason = r.Version, r.Source, r.Imported, r.Activated, r.Rejected
		}
		switch {
		case sha == active:
			e.State, seen = "active", true
		case e.Reason != "":
			e.State = "rejected"
		case sha == st.Previous:
			e.State = "previous"
		}
		l.Releases = append(l.Releases, e)
	}
	if !seen {
		l.Releases = append(l.Releases, Entry{SHA256: active, Version: versionOf(active), State: "active",
			Source: "installed (not imported yet)", Path: activePath})
	}
	slices.SortStableFunc(l.Releases, func(a, b Entry) int { return b.Imported.Compare(a.Imported) })
	for i := len(st.Rejected) - 1; i >= 0; i-- {
		l.Rejected = append(l.Rejected, st.Rejected[i])
	}
	return l, nil
}

// load reads releases.json; a missing file is an empty state.
func (s *Store) load() (*state, error) {
	st := &state{Releases: map[string]*Release{}}
	b, err := ReadStateFile(s.stateFile(), maxStateFile)
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil && !errors.Is(err, ErrUntrusted) && !errors.Is(err, ErrTooLarge) {
		return nil, fmt.Errorf("read %s: %w", s.stateFile(), err)
	}
	if err == nil {
		err = st.parse(b)
	}
	if err != nil {
		err = fmt.Errorf("read %s: %w", s.stateFile(), err)
		if os.Geteuid() != 0 {
			return nil, err
		}
		// Root mends it: the file is kept for inspection, and the state
		// rebuilt from what the store holds.
		dst, qerr := s.quarantine(s.stateFile(), err.Error())
		if qerr != nil {
			return nil, errors.Join(err, qerr)
		}
		s.note(fmt.Sprintf("%v: quarantined as %s; rebuilt from releases/", err, dst))
		return s.rebuild(), nil
	}
	return st, nil
}

// parse decodes releases.json and checks that it names releases by SHA-256.
func (st *state) parse(b []byte) error {
	if err := json.Unmarshal(b, st); err != nil {
		return fmt.Errorf("bad JSON: %w", err)
	}
	if st.Releases == nil {
		st.Releases = map[string]*Release{}
	}
	for k, r := range st.Releases {
		if !IsSHA256(k) || r == nil || r.SHA256 != k {
			return fmt.Errorf("bad entry %q: not a release's SHA-256", clipName(k))
		}
	}
	if st.Previous != "" && !IsSHA256(st.Previous) {
		return fmt.Errorf("bad previous %q: not a release's SHA-256", clipName(st.Previous))
	}
	return nil
}

// rebuild is the state the release directories alone tell.
func (s *Store) rebuild() *state {
	st := &state{Releases: map[string]*Release{}}
	des, _ := os.ReadDir(s.releasesDir())
	for _, de := range des {
		if sha := de.Name(); IsSHA256(sha) && s.Has(sha) {
			fi, _ := de.Info()
			r := &Release{SHA256: sha, Source: "recovered"}
			if fi != nil {
				r.Imported = fi.ModTime().UTC()
			}
			st.Releases[sha] = r
		}
	}
	return st
}

func (s *Store) note(msg string) {
	if s.Note != nil {
		s.Note(msg)
	}
}

func clipName(s string) string {
	if len(s) > 70 {
		return s[:70] + "…"
	}
	return s
}

// update applies fn to releases.json under the state lock and writes it back
// atomically (temporary file, fsync, rename).
func (s *Store) update(fn func(*state) error) error {
	unlock, err := s.lockFile(context.Background(), ".lock", true)
	if err != nil {
		return err
	}
	defer unlock()
	st, err := s.load()
	if err != nil {
		return err
	}
	if err := fn(st); err != nil {
		return err
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return WriteFileAtomic(s.stateFile(), append(b, '\n'), 0o644)
}

// LockUpgrades takes the upgrade lock (.upgrade.lock, flock): one `lodis
// upgrade` or `lodis rollback` at a time across processes. It waits until the
// lock is free or ctx ends; call the returned function to release it.
func (s *Store) LockUpgrades(ctx context.Context) (unlock func(), err error) {
	return s.lockFile(ctx, ".upgrade.lock", true)
}

// Lock takes an exclusive lock (flock) on the file Root/name, for whoever
// serialises work on the store (package rollout's roll-out lock). With
// wait it waits until the lock is free or ctx ends; without, it fails at
// once with an error wrapping ErrLocked.
func (s *Store) Lock(ctx context.Context, name string, wait bool) (unlock func(), err error) {
	return s.lockFile(ctx, name, wait)
}

// ErrLocked is wrapped by Lock's error when another process holds the lock.
var ErrLocked = errors.New("held by another process")

// lockFile takes an exclusive flock on Root/name, a root-only file (0600)
// opened without following a link and checked to be a regular file. As
// root, whatever else is found there — a link, a FIFO, a directory — is
// quarantined (Quarantine) and a fresh lock made in its place, so that a
// hostile or broken lock stops nothing.
func (s *Store) lockFile(ctx context.Context, name string, wait bool) (func(), error) {
	path := filepath.Join(s.Root, name)
	f, err := openLock(path)
	if errors.Is(err, ErrUntrusted) && os.Geteuid() == 0 {
		dst, qerr := s.quarantine(path, err.Error())
		if qerr == nil {
			s.note(fmt.Sprintf("%v: quarantined as %s; made a fresh lock", err, dst))
		}
		if qerr == nil || errors.Is(qerr, os.ErrNotExist) {
			f, err = openLock(path)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if !wait {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, ErrLocked)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// openLock opens (creating it if need be) the lock file at path: never
// through a link, never blocking on a FIFO, and only a regular file; the
// error wraps ErrUntrusted for anything else found there.
func openLock(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0o600)
	switch {
	case errors.Is(err, syscall.ELOOP):
		return nil, fmt.Errorf("%s is a symbolic link: %w", path, ErrUntrusted)
	case errors.Is(err, syscall.EISDIR):
		return nil, fmt.Errorf("%s is a directory: %w", path, ErrUntrusted)
	case err != nil:
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s is not a regular file (%s): %w", path, fi.Mode().Type(), ErrUntrusted)
	}
	return f, nil
}

// WriteFileAtomic writes data to path through a temporary file in the same
// directory, synced and renamed into place: readers see the old or the new
// content, never a part.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	syncDir(filepath.Dir(path))
	return nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// CheckPolicy applies the signature policy in force now to release sha:
// when the public key at keyPath exists, the release must have come with a
// valid signature (kept as app.sig beside it). A missing key file is no
// policy.
func (s *Store) CheckPolicy(sha, keyPath string) error {
	key, err := LoadPublicKey(keyPath)
	if err != nil || key == nil {
		return err
	}
	var sig []byte
	if f, err := openTrusted(s.releasePath(sha)+".sig", false); err == nil {
		sig, _ = io.ReadAll(io.LimitReader(f, maxSig))
		f.Close()
	}
	return CheckSignature(s.releasePath(sha), sig, key, keyPath)
}

// Prune keeps the store from growing without bound: of the releases, the
// keep most recently imported stay, and always the active and the previous
// one; of rejected/, the keepRejected newest entries. A release pruned stays
// in releases.json only when it was rejected (so that the same file dropped
// again is refused at once). It returns what it removed. keep < 2 or
// keepRejected < 0 means no pruning of that kind.
func (s *Store) Prune(keep, keepRejected int) ([]string, error) {
	var removed []string
	if keep >= 2 {
		err := s.update(func(st *state) error {
			active, _, _ := s.Active()
			type rel struct {
				sha string
				at  time.Time
			}
			var all []rel
			des, _ := os.ReadDir(s.releasesDir())
			for _, de := range des {
				if sha := de.Name(); IsSHA256(sha) {
					r := rel{sha: sha}
					if m := st.Releases[sha]; m != nil {
						r.at = m.Imported
					}
					all = append(all, r)
				}
			}
			slices.SortFunc(all, func(a, b rel) int { return b.at.Compare(a.at) })
			kept := 0
			for _, r := range all {
				if r.sha == active || r.sha == st.Previous {
					continue
				}
				if kept < keep-2 {
					kept++
					continue
				}
				if err := os.RemoveAll(filepath.Join(s.releasesDir(), r.sha)); err != nil {
					return err
				}
				removed = append(removed, filepath.Join(s.releasesDir(), r.sha))
				if m := st.Releases[r.sha]; m != nil && m.Rejected == "" {
					delete(st.Releases, r.sha)
				}
			}
			return nil
		})
		if err != nil {
			return removed, fmt.Errorf("prune releases: %w", err)
		}
	}
	if keepRejected >= 0 {
		des, _ := os.ReadDir(s.rejectedDir())
		// Names start with the time: newest last.
		for i := 0; i < len(des)-keepRejected; i++ {
			p := filepath.Join(s.rejectedDir(), des[i].Name())
			if err := os.RemoveAll(p); err != nil {
				return removed, fmt.Errorf("prune rejected: %w", err)
			}
			removed = append(removed, p)
		}
	}
	return removed, nil
}

// StageFile is Stage for a drop in incoming/: opened without following a
// link or blocking on a FIFO, and refused as an *Invalid when it is not a
// regular file or grows past max bytes (0: no bound) while it is copied.
func (s *Store) StageFile(path string, max int64) (*Candidate, error) {
	f, err := openTrusted(path, false)
	if err != nil {
		return nil, &Invalid{Check: "file", Err: err}
	}
	defer f.Close()
	var r io.Reader = f
	if max > 0 {
		r = io.LimitReader(f, max+1)
	}
	c, err := s.Stage(r)
	if err != nil {
		return nil, fmt.Errorf("could not be copied into the store: %w", err)
	}
	if max > 0 && c.Size > max {
		s.Discard(c)
		return nil, invalid("file", "more than the %d bytes allowed (it grew while it was copied)", max)
	}
	return c, nil
}
