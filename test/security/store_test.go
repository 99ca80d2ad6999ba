package security

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestStoreIsRootsAlone: the release store belongs to root. User lodis (the
// supervisor, any hook), a member of group lodis and a plain user can change
// nothing in it: not current, not a state file, not a lock, not a release,
// not a candidate, not incoming/.
func TestStoreIsRootsAlone(t *testing.T) {
	active := releases(t).Active
	attacks := []string{
		"ln -sfn /etc/shadow " + store + "/current",
		"ln -s /etc/shadow " + store + "/current.new && mv -T " + store + "/current.new " + store + "/current",
		"echo '{}' > " + store + "/rollout.json",
		"echo '{}' > " + store + "/releases.json",
		"rm -f " + store + "/.upgrade.lock",
		"ln -s /etc/shadow " + store + "/.attack.lock",
		"mkdir " + store + "/releases/.candidate-attack",
		"cp /bin/true " + store + "/releases/" + active + "/app",
		"echo x >> " + store + "/releases/" + active + "/app",
		"mv " + store + "/releases/" + active + " " + store + "/releases/x",
		"cp /bin/true " + incoming + "/app",
		"ls " + incoming,
		"mkfifo " + store + "/rejected/fifo",
	}
	before := sh(t, "find "+store+" -printf '%p %u %g %m %s\\n' | sort")
	for _, who := range []string{"lodis", groupMember, plainUser} {
		for _, a := range attacks {
			if out, err := as(who, "/bin/sh", "-c", a); err == nil {
				t.Errorf("as %s, %q succeeded: %s", who, a, out)
			}
		}
	}
	if after := sh(t, "find "+store+" -printf '%p %u %g %m %s\\n' | sort"); after != before {
		t.Errorf("the store changed under the attacks:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if out := sh(t, "find "+store+" ! -user root"); strings.TrimSpace(out) != "" {
		t.Errorf("entries of the store not root's:\n%s", out)
	}
}

// hostile are the targets a current link or a lock may be pointed at: a
// file only root may read, a FIFO (an open blocks), a device (reads never
// end).
var hostile = []struct {
	name, target string
}{
	{"root-only file", "/etc/lodis-secret"},
	{"fifo", "/run/lodis-fifo"},
	{"dev-zero", "/dev/zero"},
}

// plantSecret makes the root-only file and the FIFO, and returns the
// secret's SHA-256.
func plantSecret(t testing.TB) string {
	t.Helper()
	sh(t, "head -c 4096 /dev/urandom > /etc/lodis-secret && chmod 0600 /etc/lodis-secret && rm -f /run/lodis-fifo && mkfifo -m 0600 /run/lodis-fifo")
	return strings.Fields(sh(t, "sha256sum /etc/lodis-secret"))[0]
}

// secretNowhere fails the test when a copy of the secret (by content) is in
// the store, or the secret itself changed owner or mode.
func secretNowhere(t testing.TB, secretSHA string) {
	t.Helper()
	out := sh(t, "find "+store+" -type f -exec sha256sum {} + 2>/dev/null || true")
	if strings.Contains(out, secretSHA) {
		t.Errorf("a copy of the root-only file is in the store:\n%s", out)
	}
	if got := strings.TrimSpace(sh(t, "stat -c '%u %g %a' /etc/lodis-secret")); got != "0 0 600" {
		t.Errorf("the root-only file is now %q (uid gid mode), want 0 0 600", got)
	}
}

// lockFree fails the test when the upgrade lock is held: nothing may hang
// holding it.
func lockFree(t testing.TB) {
	t.Helper()
	if out, err := m.Output(context.Background(), "flock", "-n", "-E", "75", store+"/.upgrade.lock", "true"); err != nil {
		t.Errorf("the upgrade lock is held after the run: %v: %s", err, out)
	}
}

// startUpgradeAsLodis starts lodis-upgrade.service as user lodis may
// (polkit), and waits for the oneshot to end: at most 45 s.
func startUpgradeAsLodis(t testing.TB) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	return m.Output(ctx, "runuser", "-u", "lodis", "--", "systemctl", "--no-ask-password", "start", "lodis-upgrade.service")
}

// currentInStore fails the test unless current points at a release in the
// store.
func currentInStore(t testing.TB) {
	t.Helper()
	target, err := os.Readlink(host(store + "/current"))
	if err != nil {
		t.Fatalf("current: %v", err)
	}
	if !filepath.IsAbs(target) {
		target = filepath.Join(store, target)
	}
	if !strings.HasPrefix(target, store+"/releases/") {
		t.Fatalf("current points at %s, outside the store", target)
	}
}

// TestHostileCurrent: current pointed at a root-only file, a FIFO or
// /dev/zero. User lodis cannot plant it (the store is root's); planted as
// an older lodis would have left it (a link user lodis owns) or by root
// itself, root's upgrade, started by user lodis through polkit, imports
// nothing, copies nothing readable, does not hang holding the lock; the link
// is quarantined, current rebuilt, and the next good drop is processed.
func TestHostileCurrent(t *testing.T) {
	secretSHA := plantSecret(t)
	for _, h := range hostile {
		for _, owner := range []string{"lodis", "root"} {
			t.Run(h.name+"/owned-by-"+owner, func(t *testing.T) {
				if out, err := as("lodis", "/bin/sh", "-c", "ln -s "+h.target+" "+store+"/current.x && mv -T "+store+"/current.x "+store+"/current"); err == nil {
					t.Fatalf("user lodis pointed current at %s: %s", h.target, out)
				}
				good := releases(t).Active
				sh(t, fmt.Sprintf("ln -sfn %s %s/current && chown -h %s %s/current", h.target, store, owner, store))
				start := time.Now()
				out, err := startUpgradeAsLodis(t)
				took := time.Since(start)
				log := journalSince("lodis-upgrade", start.Add(-time.Second))
				if took > 40*time.Second {
					t.Fatalf("the upgrade hung (%s): %v: %s\n%s", took, err, out, log)
				}
				t.Logf("upgrade started by user lodis ended in %s (%v)", took.Round(time.Millisecond), err)
				lockFree(t)
				secretNowhere(t, secretSHA)
				r := releases(t)
				for _, e := range r.Releases {
					if e.SHA256 == secretSHA || e.Path == h.target {
						t.Errorf("%s imported as a release: %+v", h.target, e)
					}
				}
				currentInStore(t)
				if !strings.Contains(log, "quarantine") {
					t.Errorf("the upgrade did not say it quarantined current:\n%s", log)
				}
				if r.Active != good {
					t.Logf("current rebuilt onto %.12s (was %.12s)", r.Active, good)
				}
				dropGood(t)
			})
		}
	}
}

// TestHostileLockFile: the upgrade lock replaced by a link to a file root
// owns. User lodis cannot plant it; planted by root (or left by an older
// lodis, owned by user lodis), the upgrade follows no link: the file keeps
// its owner, mode and content, the link is quarantined, and drops are still
// processed.
func TestHostileLockFile(t *testing.T) {
	secretSHA := plantSecret(t)
	if out, err := as("lodis", "/bin/sh", "-c", "ln -sfn /etc/lodis-secret "+store+"/.upgrade.lock"); err == nil {
		t.Fatalf("user lodis replaced the upgrade lock: %s", out)
	}
	for _, lock := range []string{".upgrade.lock", ".lock", ".rollout.lock"} {
		for _, owner := range []string{"lodis", "root"} {
			t.Run(lock+"/owned-by-"+owner, func(t *testing.T) {
				sh(t, fmt.Sprintf("rm -f %[1]s/%[2]s && ln -s /etc/lodis-secret %[1]s/%[2]s && chown -h %[3]s %[1]s/%[2]s", store, lock, owner))
				dropGood(t)
				secretNowhere(t, secretSHA)
				if sum := strings.Fields(sh(t, "sha256sum /etc/lodis-secret"))[0]; sum != secretSHA {
					t.Errorf("the root-only file's content changed")
				}
				fi, err := os.Lstat(host(store + "/" + lock))
				if err == nil && fi.Mode()&os.ModeSymlink != 0 {
					t.Errorf("%s is still a link", lock)
				}
				lockFree(t)
			})
		}
	}
}

// TestCandidateSwappedMidValidation: while a drop is validated (a trial run
// that takes 3 s), its candidate cannot be changed by user lodis (the
// candidate directory is root's), and one changed anyway — by root — is
// refused at commit: what is committed is what was checked.
func TestCandidateSwappedMidValidation(t *testing.T) {
	slow := "#!/bin/sh\n# lodis security test: slow to start\nsleep 3\nexec /usr/bin/lodis \"$@\"\n"
	other := "#!/bin/sh\n# swapped in after the checks\nexec /usr/bin/lodis \"$@\"\n"
	before := releases(t)
	runs := upgradeRuns()
	dropBytes(t, "slow", []byte(slow), 0o755)
	var cand string
	err := pollFast(20*time.Second, func() bool {
		ms, _ := filepath.Glob(host(store + "/releases/.candidate-*/app"))
		for _, p := range ms {
			if b, err := os.ReadFile(p); err == nil && string(b) == slow {
				cand = p
				return true
			}
		}
		return false
	})
	if err != nil {
		t.Fatalf("no candidate of the drop appeared: %v\n%s", err, journal("lodis-upgrade", 20))
	}
	inside := strings.TrimPrefix(cand, m.Root)
	for _, a := range []string{
		"cp /bin/true " + inside,
		"echo 'exec /bin/sh' >> " + inside,
		"mv " + filepath.Dir(inside) + " " + filepath.Dir(inside) + ".x",
		"ln -sf /bin/true " + inside,
	} {
		if out, err := as("lodis", "/bin/sh", "-c", a); err == nil {
			t.Errorf("user lodis changed the candidate under validation: %q: %s", a, out)
		}
	}
	// Root's own copy, swapped: the commit must notice.
	tmp := cand + ".swap"
	if err := os.WriteFile(tmp, []byte(other), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, cand); err != nil {
		t.Fatal(err)
	}
	awaitUpgrade(t, runs, 60*time.Second)
	after := releases(t)
	if after.Active != before.Active {
		t.Fatalf("active release switched to %.12s", after.Active)
	}
	if len(after.Rejected) == 0 || !strings.Contains(after.Rejected[0].Reason, "changed since it was checked") {
		t.Fatalf("want the drop rejected because the candidate changed; last rejection %+v\n%s", first(after.Rejected), journal("lodis-upgrade", 20))
	}
	for _, e := range after.Releases {
		if b, err := os.ReadFile(host(e.Path)); err == nil && (string(b) == slow || string(b) == other) {
			t.Errorf("the swapped candidate became release %.12s", e.SHA256)
		}
	}
}

// pollFast calls cond every 2 ms until it is true or timeout passes.
func pollFast(timeout time.Duration, cond func() bool) error {
	end := time.Now().Add(timeout)
	for time.Now().Before(end) {
		if cond() {
			return nil
		}
		time.Sleep(2 * time.Millisecond)
	}
	return fmt.Errorf("not within %s", timeout)
}

// TestOversizedDropRejectedUnread: a drop over -max-size (50 MB here) is
// rejected with a reason, and the upgrade never reads a byte of it
// (inotify counts no IN_ACCESS on the file). The next good drop is
// processed.
func TestOversizedDropRejectedUnread(t *testing.T) {
	const size = 64 << 20
	runs := upgradeRuns()
	tmp := host(incoming + "/.big.tmp")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil { // sparse: costs no memory
		t.Fatal(err)
	}
	f.Close()
	os.Chmod(tmp, 0o755)
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if _, err := unix.InotifyAddWatch(fd, tmp, unix.IN_ACCESS); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, host(incoming+"/big")); err != nil {
		t.Fatal(err)
	}
	awaitUpgrade(t, runs, 60*time.Second)
	buf := make([]byte, 4096)
	n, err := unix.Read(fd, buf)
	if err != nil && err != syscall.EAGAIN {
		t.Fatal(err)
	}
	if n > 0 {
		t.Errorf("the oversized drop was read (%d bytes of inotify IN_ACCESS events)", n)
	}
	r := releases(t)
	if len(r.Rejected) == 0 || !strings.Contains(r.Rejected[0].Reason, "max-size") {
		t.Fatalf("want a rejection for -max-size; last rejection %+v", first(r.Rejected))
	}
	t.Logf("rejected: %s", r.Rejected[0].Reason)
	dropGood(t)
}

// TestStorePruned: after seven releases dropped one after the other, the
// store holds at most --keep (5), the active and the previous one among
// them, and rejected/ at most --keep-rejected (20) entries.
func TestStorePruned(t *testing.T) {
	for _, name := range []string{"unsigned", "signed-a", "signed-b", good(1), good(2), good(3), good(4)} {
		if releases(t).Active == sha(t, name) {
			continue
		}
		runs := upgradeRuns()
		drop(t, name)
		awaitUpgrade(t, runs, 90*time.Second)
		if a := releases(t).Active; a != sha(t, name) {
			t.Fatalf("%s not rolled out (active %.12s)\n%s", name, a, journal("lodis-upgrade", 20))
		}
	}
	r := releases(t)
	des, _ := filepath.Glob(host(store + "/releases/[0-9a-f]*"))
	if len(des) > 5 {
		t.Errorf("%d releases in the store, want at most 5", len(des))
	}
	for _, sha := range []string{r.Active, r.Previous} {
		if _, err := os.Stat(host(store + "/releases/" + sha)); sha == "" || err != nil {
			t.Errorf("release %.12s (active %.12s, previous %.12s) pruned", sha, r.Active, r.Previous)
		}
	}
	rej, _ := os.ReadDir(host(store + "/rejected"))
	if len(rej) > 20 {
		t.Errorf("%d entries in rejected/, want at most 20", len(rej))
	}
	t.Logf("%d releases, %d entries in rejected/; %d rejections on record", len(des), len(rej), len(r.Rejected))
}
