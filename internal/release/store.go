// Package release keeps lodis binaries content-addressed on disk and switches
// the active one atomically.
//
// Layout under Store.Root (default /var/lib/lodis, made by units/lodis.tmpfiles):
//
//	releases/<sha256>/lodis   every accepted binary, named by its SHA-256
//	current                   symlink to the active release; units run the worker through it
//	incoming/lodis            the drop: copy a binary here to upgrade (see Drop)
//	incoming/lodis.sig        its detached signature, when a public key is configured
//	rejected/<time>-<sha12>/  refused drops: the file as dropped and a "reason" file
//	releases.json             bookkeeping: metadata, previous release, rejections
//	rollout.json              the roll-out under way, or the last one (package rollout)
//	.lock, .upgrade.lock, .rollout.lock   flocks (see Store.Lock)
//
// Root, releases/ and rejected/ belong to user lodis (tmpfiles.d): the
// supervisor, which drives roll-outs as that user, flips current, writes the
// bookkeeping and moves a release that failed its roll-out to rejected/.
// incoming/ stays root's (0750 root:lodis): only root drops binaries. Entries
// root makes here are given to the owner of Root (release directories, lock
// files); the binaries themselves stay root's.
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

// BinaryName is the file name of a binary inside a release or drop directory.
const BinaryName = "lodis"

// Store is the release store under Root. The zero value is not usable: use
// NewStore. Methods are safe for concurrent use by several processes.
type Store struct {
	// Root is the store's directory; default DefaultRoot.
	Root string
	// Now tells the time; default time.Now.
	Now func() time.Time
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

// maxRejections bounds the rejection history kept in releases.json.
const maxRejections = 200

// Paths.
func (s *Store) releasesDir() string { return filepath.Join(s.Root, "releases") }
func (s *Store) currentLink() string { return filepath.Join(s.Root, "current") }
func (s *Store) stateFile() string   { return filepath.Join(s.Root, "releases.json") }
func (s *Store) rejectedDir() string { return filepath.Join(s.Root, "rejected") }
func (s *Store) IncomingDir() string { return filepath.Join(s.Root, "incoming") }
func (s *Store) releasePath(sha string) string {
	return filepath.Join(s.releasesDir(), sha, BinaryName)
}

// Path returns the binary of release sha.
func (s *Store) Path(sha string) string { return s.releasePath(sha) }

// CurrentLink is the path of the symlink the units run the worker through.
func (s *Store) CurrentLink() string { return s.currentLink() }

// Active returns the SHA-256 of the active release (the binary current points
// at) and that binary's path. The binary need not be in the store yet (release
// one before import): then its hash is computed.
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
	sha, err = buildinfo.FileSHA256(target)
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
	if file != BinaryName || !IsSHA256(dir) {
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

// Has reports whether release sha is in the store.
func (s *Store) Has(sha string) bool {
	st, err := os.Stat(s.releasePath(sha))
	return err == nil && st.Mode().IsRegular()
}

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
	f, err := os.Open(path)
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
}

// Stage copies r into a new candidate directory (mode 0755, binary 0755),
// hashing as it goes, and syncs it to disk. The copy is the store's own: a
// writer still holding the source open cannot change what is validated.
func (s *Store) Stage(r io.Reader) (*Candidate, error) {
	if err := os.MkdirAll(s.releasesDir(), 0o755); err != nil {
		return nil, fmt.Errorf("stage: %w", err)
	}
	dir, err := os.MkdirTemp(s.releasesDir(), ".candidate-")
	if err != nil {
		return nil, fmt.Errorf("stage: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("stage: %w", err)
	}
	// The release directory is the store owner's, so that the supervisor can
	// move it to rejected/ after a failed roll-out; the binary stays root's.
	s.own(dir)
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
	final := filepath.Dir(s.releasePath(c.SHA256))
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
	target := filepath.Join("releases", sha, BinaryName) // relative to Root
	tmp := s.currentLink() + ".new"
	os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return fmt.Errorf("activate %s: %w", buildinfo.ShortSHA(sha), err)
	}
	if err := os.Rename(tmp, s.currentLink()); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("activate %s: %w", buildinfo.ShortSHA(sha), err)
	}
	syncDir(s.Root)
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
	s.own(dir)
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
	b, err := os.ReadFile(s.stateFile())
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", s.stateFile(), err)
	}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("read %s: bad JSON: %w", s.stateFile(), err)
	}
	if st.Releases == nil {
		st.Releases = map[string]*Release{}
	}
	return st, nil
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

// lockFile takes an exclusive flock on Root/name. The file is opened
// read-only (flock needs no more), so that the supervisor, running as user
// lodis, can lock a file root created and the other way round: created by
// root, it belongs to the store's owner (see owner) with mode 0640.
func (s *Store) lockFile(ctx context.Context, name string, wait bool) (func(), error) {
	path := filepath.Join(s.Root, name)
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	if uid, gid, ok := s.owner(); ok {
		// Also mends a lock file an older lodis made 0600 for root.
		f.Chown(uid, gid)
		f.Chmod(0o640)
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

// owner returns the user and group the store's files should belong to —
// those of Root, which tmpfiles.d gives to user lodis so that the supervisor
// can flip current and move a rejected release — when this process runs as
// root and Root is not root's own; ok is false otherwise (nothing to change).
func (s *Store) owner() (uid, gid int, ok bool) {
	if os.Geteuid() != 0 {
		return 0, 0, false
	}
	var st syscall.Stat_t
	if err := syscall.Stat(s.Root, &st); err != nil || st.Uid == 0 {
		return 0, 0, false
	}
	return int(st.Uid), int(st.Gid), true
}

// AdoptReleases gives the release directories to the store's owner (see
// owner) when an older lodis made them root's, so that the supervisor can
// move any of them to rejected/. It does nothing unless the caller is root.
func (s *Store) AdoptReleases() {
	uid, gid, ok := s.owner()
	if !ok {
		return
	}
	des, _ := os.ReadDir(s.releasesDir())
	for _, de := range des {
		if !de.IsDir() || !IsSHA256(de.Name()) {
			continue
		}
		if fi, err := de.Info(); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != uid {
				os.Lchown(filepath.Join(s.releasesDir(), de.Name()), uid, gid)
			}
		}
	}
}

// own gives path to the store's owner (see owner); it does nothing for a
// caller that is not root. A failure only means the supervisor cannot move
// that entry later, so it is not an error here.
func (s *Store) own(path string) {
	if uid, gid, ok := s.owner(); ok {
		os.Lchown(path, uid, gid)
	}
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
