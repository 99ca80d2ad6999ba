package upgrade

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lodis/lodis/internal/events"
	"github.com/lodis/lodis/internal/statusapi"

	"github.com/lodis/lodis/internal/load"
	"github.com/lodis/lodis/internal/release"
	"github.com/lodis/lodis/internal/rollout"
	"github.com/lodis/lodis/internal/testenv"
)

// TestDuplicateDropIsANoOp: the active binary dropped again changes nothing
// and says so.
func TestDuplicateDropIsANoOp(t *testing.T) {
	start := time.Now()
	before := mustHealth(t, port(0))
	// The active release, whichever test made it so.
	active, err := os.ReadFile(filepath.Join(m.Root, release.DefaultRoot, "releases", before.SHA256, "app"))
	if err != nil {
		t.Fatal(err)
	}
	rolloutBefore := lastRollout(t)
	runs := upgradeRuns(t)
	dropBytes(t, active, 0o755)
	awaitUpgrade(t, runs, 30*time.Second)

	r := releases(t)
	if r.Active != before.SHA256 {
		t.Fatalf("active release %.12s, want %.12s unchanged", r.Active, before.SHA256)
	}
	if after := mustHealth(t, port(0)); after.SHA256 != before.SHA256 {
		t.Fatalf("port %d now runs %.12s", port(0), after.SHA256)
	}
	if (r.Rollout == nil) != (rolloutBefore == nil) || r.Rollout != nil && r.Rollout.ID != rolloutBefore.ID {
		t.Fatalf("a roll-out ran for a duplicate drop: %+v", r.Rollout)
	}
	if len(journalGrep(t, start, "the drop is the active release already")) == 0 {
		t.Fatal("no log line says the duplicate drop was a no-op")
	}
	if m.State(context.Background(), "lodis-upgrade.service") != "inactive/dead" {
		t.Fatal("lodis-upgrade.service failed on a duplicate drop")
	}
}

// TestBadDropsAreRejected: each bad app is moved to rejected/ with its
// reason before anything switches, and nothing running changes; the one
// that passes the trial but fails its health check after the canary switch
// is rolled back.
func TestBadDropsAreRejected(t *testing.T) {
	good, err := os.ReadFile(bins["v2"])
	if err != nil {
		t.Fatal(err)
	}
	type tc struct {
		name     string
		content  []byte
		mode     os.FileMode
		reason   string
		rollback bool
	}
	read := func(n string) []byte { b, _ := os.ReadFile(bins[n]); return b }
	cases := []tc{
		{"truncated copy", good[:len(good)*2/3], 0o755, "elf: truncated", false},
		{"text file", []byte("hello, not a program\n"), 0o755, "elf: not an ELF executable", false},
		{"another architecture", read("arm64"), 0o755, "elf: built for arm64 (EM_AARCH64); this machine runs amd64", false},
		{"no execute bit", good, 0o644, "file: not executable: mode 0644", false},
		{"script whose interpreter is missing", []byte("#!/usr/bin/python9\nprint('hi')\n"), 0o755, "script: the interpreter /usr/bin/python9 is missing", false},
		{"exits at start-up", read("exit-at-start"), 0o755, "trial: exited before it answered", false},
		{"health answers 503", read("serve-unhealthy"), 0o755, "trial: /__/health answered 503 Service Unavailable three times in a row", false},
		{"never answers", read("hang-health"), 0o755, "trial: no healthy answer on /__/health within", false},
		{"ignores SIGTERM", read("ignore-sigterm"), 0o755, "trial: ignored SIGTERM", false},
		{"unhealthy after the canary switch", read("unhealthy-after-1s"), 0o755, "503", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := releases(t)
			h0 := mustHealth(t, port(0)) // a running worker that must not notice
			runs := upgradeRuns(t)
			dropBytes(t, c.content, c.mode)
			awaitUpgrade(t, runs, 90*time.Second)

			after := releases(t)
			if len(after.Rejected) != len(before.Rejected)+1 {
				t.Fatalf("%d rejections, want %d", len(after.Rejected), len(before.Rejected)+1)
			}
			rej := after.Rejected[0]
			if !strings.Contains(rej.Reason, c.reason) {
				t.Fatalf("rejected because %q, want %q", rej.Reason, c.reason)
			}
			if reason, err := os.ReadFile(filepath.Join(m.Root, filepath.Dir(rej.Path), "reason")); err != nil || !strings.Contains(string(reason), c.reason) {
				t.Fatalf("reason file next to %s: %q, %v", rej.Path, reason, err)
			}
			if _, err := os.Stat(filepath.Join(m.Root, rej.Path)); err != nil {
				t.Fatalf("the rejected binary is not kept: %v", err)
			}
			if after.Active != before.Active {
				t.Fatalf("active release switched from %.12s to %.12s", before.Active, after.Active)
			}
			h := mustHealth(t, port(0))
			if h.SHA256 != before.Active {
				t.Fatalf("port %d serves %.12s, want the old release %.12s", port(0), h.SHA256, before.Active)
			}
			if !c.rollback {
				if h.PID != h0.PID && h0.PID != 0 {
					// An idle exit (30 s) could change the PID too; a
					// roll-out record would not.
					t.Logf("worker pid %d → %d", h0.PID, h.PID)
				}
				if (after.Rollout == nil) != (before.Rollout == nil) || after.Rollout != nil && after.Rollout.ID != before.Rollout.ID {
					t.Fatalf("a roll-out started for a binary that failed validation: %+v", after.Rollout)
				}
				return
			}
			ro := after.Rollout
			if ro == nil || ro.Phase != rollout.PhaseRolledBack || ro.To != rej.SHA256 {
				t.Fatalf("last roll-out %+v, want the bad release rolled back", ro)
			}
			took := ro.Finished.Sub(ro.Started)
			t.Logf("time to rollback (flip, canary restart, health failure, flip back, restart): %s", took.Round(time.Millisecond))
			if took > 30*time.Second {
				t.Fatalf("rollback took %s", took)
			}
		})
	}
}

// TestSignatures: with a public key configured, a drop without a valid
// lodis.sig is rejected, a signed one is accepted.
func TestSignatures(t *testing.T) {
	privPEM, pubPEM, err := release.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	priv, _ := release.ParsePrivateKey(privPEM)
	if err := m.WriteFile(release.DefaultPublicKey, pubPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(filepath.Join(m.Root, release.DefaultPublicKey))
	sigOf := func(name string) []byte {
		s, err := release.SignFile(bins[name], priv)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	for _, c := range []struct {
		name   string
		sig    []byte // nil: no lodis.sig
		reason string
	}{
		{"missing signature", nil, "signature: unsigned"},
		{"bad signature", sigOf("v2"), "signature: bad signature"}, // another binary's
		{"valid signature", sigOf("v3"), ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := releases(t)
			runs := upgradeRuns(t)
			if c.sig != nil {
				if err := m.WriteFile(incoming+"/lodis.sig", c.sig, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			drop(t, bins["v3"], 0o755)
			awaitUpgrade(t, runs, 60*time.Second)
			after := releases(t)
			if c.reason == "" {
				if after.Active != sha(t, "v3") {
					t.Fatalf("signed drop not rolled out: active %.12s; rejections %+v", after.Active, after.Rejected[:1])
				}
				return
			}
			if len(after.Rejected) != len(before.Rejected)+1 || !strings.Contains(after.Rejected[0].Reason, c.reason) {
				t.Fatalf("rejections %+v, want a new one for %q", after.Rejected[:min(1, len(after.Rejected))], c.reason)
			}
			if after.Active != before.Active {
				t.Fatal("active release switched")
			}
		})
	}
}

// TestSlowCopyIsNotValidatedHalfWritten: a drop written in chunks over about
// three seconds, with pauses longer than the settle time, is taken only once
// complete.
func TestSlowCopyIsNotValidatedHalfWritten(t *testing.T) {
	start := time.Now()
	content, err := os.ReadFile(bins["v4"])
	if err != nil {
		t.Fatal(err)
	}
	before := releases(t)
	runs := upgradeRuns(t)
	f, err := os.OpenFile(filepath.Join(m.Root, incoming, "lodis"), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	chunk := len(content)/8 + 1
	for off := 0; off < len(content); off += chunk {
		if _, err := f.Write(content[off:min(off+chunk, len(content))]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(400 * time.Millisecond)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	awaitUpgrade(t, runs, 60*time.Second)
	after := releases(t)
	if len(after.Rejected) != len(before.Rejected) {
		t.Fatalf("the slow copy was rejected: %s", after.Rejected[0].Reason)
	}
	if after.Active != sha(t, "v4") {
		t.Fatalf("active %.12s, want the complete slow copy %.12s", after.Active, sha(t, "v4"))
	}
	if len(journalGrep(t, start, "waiting for the drop to be complete")) == 0 {
		t.Fatal("lodis upgrade did not wait for the writer: the path unit fired at creation")
	}
}

// TestRolloutUnderLoadLosesNothing: ten ports under fixed-rate keep-alive
// load; a new build is dropped; root's lodis upgrade moves every port to it
// with no request failing, while `lodis status` shows the roll-out under
// way; the supervisor keeps running the installed lodis throughout, holds
// its remedies, and relays every step.
func TestRolloutUnderLoadLosesNothing(t *testing.T) {
	ctx := context.Background()
	start := time.Now()
	ports := make([]int, nPorts)
	for i := range ports {
		ports[i] = port(i)
		mustHealth(t, ports[i]) // every port has a running worker
	}
	supBefore := supervisorPID(t)
	installed := installedSHA(t)
	if got := exeSHA(t, supBefore); got != installed {
		t.Fatalf("the supervisor runs %.12s, want the installed lodis %.12s", got, installed)
	}
	// 800 req/s over 20 keep-alive connections; a request net/http would
	// have re-sent on a fresh connection counts as failed.
	targets := make([]string, len(ports))
	for i, p := range ports {
		targets[i] = fmt.Sprintf("http://127.0.0.1:%d/", p)
	}
	stopLoad := load.Background(ctx, load.Options{Targets: targets, Rate: 800, Conns: 20, Duration: 90 * time.Second})
	time.Sleep(2 * time.Second)
	runs := upgradeRuns(t)
	dropAt := time.Now()
	drop(t, bins["v5"], 0o755)
	// What an operator sees meanwhile: `lodis status` has a roll-out line.
	var seen []string
	err := testenv.WaitFor(ctx, 60*time.Second, func() (bool, string) {
		if out, err := m.Output(ctx, "lodis", "status"); err == nil {
			for _, l := range strings.Split(out, "\n") {
				if strings.HasPrefix(l, "roll-out ") && !slices.Contains(seen, l) {
					seen = append(seen, l)
				}
			}
		}
		ro := persisted(t)
		return ro != nil && ro.To == sha(t, "v5") && ro.Phase.Finished(), "roll-out not finished"
	})
	if err != nil {
		t.Fatal(err)
	}
	awaitUpgrade(t, runs, 60*time.Second)
	allAt := time.Now()
	time.Sleep(time.Second)
	res, lerr := stopLoad()
	if res == nil {
		t.Fatalf("load: %v", lerr)
	}
	ok, failed := res.OK, res.Failed

	want := sha(t, "v5")
	for _, p := range ports {
		if h := mustHealth(t, p); h.SHA256 != want {
			t.Errorf("port %d runs %.12s (%s), want %.12s", p, h.SHA256, h.Version, want)
		}
	}
	ro := lastRollout(t)
	if ro == nil || ro.Phase != rollout.PhaseDone || len(ro.Moved) != nPorts {
		t.Fatalf("roll-out %+v, want done with %d workers moved", ro, nPorts)
	}
	t.Logf("%d requests ok, %d failed; drop to all healthy %s (canary soak 2 s); roll-out %s",
		ok, failed, allAt.Sub(dropAt).Round(time.Millisecond), ro.Finished.Sub(ro.Started).Round(time.Millisecond))
	if failed != 0 {
		t.Errorf("%d of %d requests failed during the roll-out: %v", failed, ok+failed, res.Failures)
	}
	if ok < 4000 {
		t.Errorf("only %d requests answered: the load did not run", ok)
	}
	if len(journalGrep(t, start, "event=started")) != 1 || len(journalGrep(t, start, "rolled out: every running worker is on up-v5")) != 1 {
		t.Errorf("lodis upgrade did not drive the roll-out or does not say it was rolled out")
	}

	// Every step, in order; no step moves the supervisor.
	var kinds []string
	for _, e := range ro.Events {
		kinds = append(kinds, e.Kind)
	}
	if n := strings.Count(strings.Join(kinds, " "), "moved "); n < nPorts {
		t.Errorf("%d moved events, want %d: %v", n, nPorts, kinds)
	}
	for _, k := range []string{"started", "flipped", "canary-soak", "canary-passed", "workers-moved", "done"} {
		if !slices.Contains(kinds, k) {
			t.Errorf("no %s event: %v", k, kinds)
		}
	}
	if slices.Contains(kinds, "supervisor-restart") {
		t.Errorf("the roll-out restarted the supervisor: %v", kinds)
	}
	if supAfter := supervisorPID(t); supAfter != supBefore || exeSHA(t, supAfter) != installed {
		t.Errorf("supervisor pid %d → %d (runs %.12s): it must stay the installed lodis, untouched", supBefore, supAfter, exeSHA(t, supAfter))
	}
	// The supervisor held its remedies, mended nothing meanwhile, and
	// relayed the steps as events.
	for _, l := range unitJournalGrep(t, "lodis-supervisor", start, "event=remedy") {
		if strings.Contains(l, "result=done") {
			t.Errorf("the supervisor mended a worker during the roll-out: %s", l)
		}
	}
	if len(unitJournalGrep(t, "lodis-supervisor", start, "worker remedies held: roll-out "+ro.ID)) == 0 {
		t.Errorf("the supervisor did not hold its remedies for the roll-out")
	}
	relayed := false
	for _, e := range supervisorEvents(t) {
		relayed = relayed || e.Kind == events.KindRollout && e.Action == "done" && e.To == want[:12]
	}
	if !relayed {
		t.Errorf("the supervisor's events do not relay the roll-out's end")
	}

	// lodis status: the roll-out line while it ran, and each port's release.
	if !slices.ContainsFunc(seen, func(l string) bool { return strings.Contains(l, "rolling, moved") }) {
		t.Errorf("lodis status never showed the roll-out under way; roll-out lines seen: %q", seen)
	}
	err = testenv.WaitFor(ctx, 15*time.Second, func() (bool, string) {
		s, err := status(ctx)
		if err != nil {
			return false, err.Error()
		}
		if s.SHA256 != installed {
			return false, fmt.Sprintf("supervisor reports %.12s", s.SHA256)
		}
		if s.Rollout == nil || s.Rollout.Phase != "done" || s.Rollout.Running || s.Rollout.Moved != nPorts || s.Rollout.To != want {
			return false, fmt.Sprintf("roll-out line %+v", s.Rollout)
		}
		for _, in := range s.Instances {
			if p, _ := strconv.Atoi(in.Port); p >= port(0) && p < port(nPorts) && (in.SHA256 != want || in.Version != "up-v5") {
				return false, fmt.Sprintf("port %s shows %s %.12s", in.Port, in.Version, in.SHA256)
			}
		}
		return true, ""
	})
	if err != nil {
		t.Error(err)
	}
	table, _ := m.Output(ctx, "lodis", "status")
	rows := 0
	for _, l := range strings.Split(table, "\n") {
		if f := strings.Fields(l); len(f) > 5 && f[4] == "up-v5" && f[5] == want[:12] {
			rows++
		}
	}
	if !strings.Contains(table, "SHA256") || rows != nPorts || !strings.Contains(table, fmt.Sprintf("last roll-out %s: upgrade", ro.ID)) ||
		!strings.Contains(table, fmt.Sprintf("done, moved %d/%d", nPorts, nPorts)) {
		t.Errorf("lodis status does not show every port's release (%d rows on up-v5) and the roll-out:\n%s", rows, table)
	}
}

// TestTwoDropsInQuickSuccession: a drop replaced before it settled (the
// second comes 100 ms after the first, within the 250 ms settle), or taken
// and superseded while it was validated, makes one roll-out, ending on the
// newer.
func TestTwoDropsInQuickSuccession(t *testing.T) {
	start := time.Now()
	runs := upgradeRuns(t)
	drop(t, bins["v6"], 0o755)
	time.Sleep(100 * time.Millisecond)
	drop(t, bins["v7"], 0o755)
	awaitUpgrade(t, runs, 120*time.Second)
	r := releases(t)
	if r.Active != sha(t, "v7") {
		t.Fatalf("active %.12s, want the newer drop %.12s", r.Active, sha(t, "v7"))
	}
	if n := len(journalGrep(t, start, "event=started")); n != 1 {
		t.Fatalf("%d roll-outs started, want exactly one", n)
	}
	for i := range nPorts {
		if h, err := testenv.Health(context.Background(), port(i)); err != nil || h.SHA256 != r.Active {
			t.Errorf("port %d: %.12s, %v", port(i), h.SHA256, err)
		}
	}
}

// TestManualRollback: `lodis rollback` (root) returns every running port to
// the previous release; user lodis may not, and changes nothing; run again
// by root, it comes back.
func TestManualRollback(t *testing.T) {
	before := releases(t)
	if before.Previous == "" {
		t.Fatal("no previous release to roll back to: the earlier tests did not upgrade")
	}
	for i := range nPorts {
		mustHealth(t, port(i))
	}
	out, err := m.Output(context.Background(), "lodis", "rollback", "--canary-soak", "1s")
	if err != nil {
		t.Fatalf("lodis rollback: %v", err)
	}
	after := releases(t)
	if after.Active != before.Previous {
		t.Fatalf("active %.12s after rollback, want the previous %.12s\n%s", after.Active, before.Previous, out)
	}
	for i := range nPorts {
		if h := mustHealth(t, port(i)); h.SHA256 != before.Previous {
			t.Errorf("port %d runs %.12s, want %.12s", port(i), h.SHA256, before.Previous)
		}
	}
	if after.Previous != before.Active {
		t.Errorf("previous is %.12s, want the release just left %.12s (a second rollback returns)", after.Previous, before.Active)
	}
	if !strings.Contains(out, "event=started") || !strings.Contains(out, "rolled out (rollback): every running worker is on") {
		t.Errorf("lodis rollback did not drive the roll-out or does not say how it ended:\n%s", out)
	}
	if ro := lastRollout(t); ro == nil || ro.Kind != rollout.KindRollback || ro.Phase != rollout.PhaseDone {
		t.Errorf("last roll-out %+v, want a rollback, done", ro)
	}

	if out, err := m.Output(context.Background(), "runuser", "-u", "lodis", "--", "lodis", "rollback", "--canary-soak", "1s"); err == nil {
		t.Errorf("lodis rollback as user lodis succeeded:\n%s", out)
	} else if a := releases(t).Active; a != before.Previous {
		t.Fatalf("a refused rollback by user lodis changed the active release to %.12s", a)
	}
	out, err = m.Output(context.Background(), "lodis", "rollback", "--canary-soak", "1s")
	if err != nil {
		t.Fatalf("second lodis rollback: %v", err)
	}
	if a := releases(t).Active; a != before.Active {
		t.Fatalf("active %.12s after the second rollback, want %.12s again\n%s", a, before.Active, out)
	}
	for i := range nPorts {
		if h := mustHealth(t, port(i)); h.SHA256 != before.Active {
			t.Errorf("port %d runs %.12s, want %.12s", port(i), h.SHA256, before.Active)
		}
	}
}

// waitRollout waits until the persisted roll-out to the release sha
// satisfies cond.
func waitRollout(t testing.TB, to string, timeout time.Duration, what string, cond func(*rollout.State) bool) *rollout.State {
	t.Helper()
	var got *rollout.State
	err := testenv.WaitFor(context.Background(), timeout, func() (bool, string) {
		st := persisted(t)
		if st == nil || st.To != to {
			return false, fmt.Sprintf("no roll-out to %.12s yet (%+v)", to, st)
		}
		got = st
		return cond(st), fmt.Sprintf("roll-out %s: %s, %d of %d moved, canary passed %v", st.ID, st.Phase, len(st.Moved), len(st.Units), st.CanaryPassed)
	})
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return got
}

// TestSupervisorKilledMidRollout: the supervisor is killed (SIGKILL) while
// the canary is watched. Root's roll-out does not depend on it: it goes on
// to the end, every port on the new release; systemd starts the supervisor
// again, which shows the roll-out.
func TestSupervisorKilledMidRollout(t *testing.T) {
	ctx := context.Background()
	for i := range nPorts {
		mustHealth(t, port(i))
	}
	killed := supervisorPID(t)
	runs := upgradeRuns(t)
	drop(t, bins["v2"], 0o755)
	waitRollout(t, sha(t, "v2"), 30*time.Second, "canary soak", func(st *rollout.State) bool {
		return st.Phase == rollout.PhaseRolling && !st.CanaryPassed && len(st.Moved) == 1
	})
	if _, err := m.Sh(ctx, fmt.Sprintf("kill -9 %d", killed)); err != nil {
		t.Fatal(err)
	}
	awaitUpgrade(t, runs, 90*time.Second)
	st := persisted(t)
	if st.To != sha(t, "v2") || st.Phase != rollout.PhaseDone {
		t.Fatalf("roll-out after the supervisor's kill: %s, %q; want done", st.Phase, st.Reason)
	}
	for i := range nPorts {
		if h := mustHealth(t, port(i)); h.SHA256 != sha(t, "v2") {
			t.Errorf("port %d runs %.12s, want %.12s", port(i), h.SHA256, sha(t, "v2"))
		}
	}
	err := testenv.WaitFor(ctx, 30*time.Second, func() (bool, string) {
		s, err := status(ctx)
		return err == nil && s.PID != killed && s.Rollout != nil && s.Rollout.ID == st.ID && s.Rollout.Phase == "done",
			fmt.Sprintf("status %v %+v", err, s.Rollout)
	})
	if err != nil {
		t.Errorf("the restarted supervisor does not show the roll-out: %v", err)
	}
}

// TestUpgradeKilledMidRollout: root's lodis upgrade is killed (SIGKILL)
// while it watches the canary. The supervisor sees the roll-out's driver
// gone and has root take it up (lodis-upgrade.service); the canary had not
// passed, so every port ends on the old release, never a mix.
func TestUpgradeKilledMidRollout(t *testing.T) {
	ctx := context.Background()
	start := time.Now()
	old := releases(t).Active
	for i := range nPorts {
		mustHealth(t, port(i))
	}
	drop(t, bins["v8"], 0o755)
	st := waitRollout(t, sha(t, "v8"), 30*time.Second, "canary soak", func(st *rollout.State) bool {
		return st.Phase == rollout.PhaseRolling && !st.CanaryPassed && len(st.Moved) == 1
	})
	if _, err := m.Sh(ctx, fmt.Sprintf("kill -9 %d", st.DriverPID)); err != nil {
		t.Fatal(err)
	}
	st = waitRollout(t, sha(t, "v8"), 90*time.Second, "the roll-out taken up", func(st *rollout.State) bool { return st.Phase.Finished() })
	if st.Phase != rollout.PhaseRolledBack || !strings.Contains(st.Reason, "interrupted before the canary passed") {
		t.Fatalf("roll-out after the kill: %s, %q; want rolled back because it was interrupted", st.Phase, st.Reason)
	}
	if releases(t).Active != old {
		t.Errorf("active release %.12s, want the old %.12s", releases(t).Active, old)
	}
	for i := range nPorts {
		if h := mustHealth(t, port(i)); h.SHA256 != old {
			t.Errorf("port %d runs %.12s, want the old release %.12s: a mix left behind", port(i), h.SHA256, old)
		}
	}
	if len(unitJournalGrep(t, "lodis-supervisor", start, "action=taking-up")) == 0 {
		t.Errorf("the supervisor did not have root take the roll-out up")
	}
	if len(journalGrep(t, start, "rolled back: interrupted before the canary passed its soak")) == 0 {
		t.Errorf("lodis upgrade does not end with the rollback")
	}
}

// TestSecondDropDuringRolloutIsSerialised: a drop made while another rolls
// out waits for it; of two drops made meanwhile the newer wins; a roll-out
// asked of the supervisor while one runs is refused with 409.
func TestSecondDropDuringRolloutIsSerialised(t *testing.T) {
	ctx := context.Background()
	start := time.Now()
	for i := range nPorts {
		mustHealth(t, port(i))
	}
	runs := upgradeRuns(t)
	drop(t, bins["v3"], 0o755)
	first := waitRollout(t, sha(t, "v3"), 30*time.Second, "first roll-out under way", func(st *rollout.State) bool {
		return st.Phase == rollout.PhaseRolling
	})
	// Straight to the API: busy.
	prev := releases(t).Previous
	out, _ := m.Output(ctx, "curl", "-s", "-o", "/dev/stderr", "-w", "%{http_code}", "--unix-socket", statusapi.DefaultSocket,
		"-H", "Content-Type: application/json", "-d", fmt.Sprintf(`{"sha256":"%s"}`, prev), "http://supervisor/v1/rollout")
	if !strings.HasSuffix(strings.TrimSpace(out), "409") || !strings.Contains(out, "a roll-out is under way: "+first.ID) {
		t.Errorf("POST /v1/rollout during a roll-out answered %q, want 409 naming %s", out, first.ID)
	}
	drop(t, bins["v4"], 0o755) // waits…
	time.Sleep(300 * time.Millisecond)
	drop(t, bins["v6"], 0o755) // …and is replaced by a newer one
	awaitUpgrade(t, runs, 120*time.Second)

	if a := releases(t).Active; a != sha(t, "v6") {
		t.Fatalf("active %.12s, want the newest drop %.12s", a, sha(t, "v6"))
	}
	for i := range nPorts {
		if h := mustHealth(t, port(i)); h.SHA256 != sha(t, "v6") {
			t.Errorf("port %d runs %.12s, want %.12s", port(i), h.SHA256, sha(t, "v6"))
		}
	}
	// lodis upgrade's steps: the first roll-out ended before the second
	// started, and v4 was never rolled out.
	var order []string
	for _, l := range journalGrep(t, start, "rollout=") {
		switch {
		case strings.Contains(l, "event=started"), strings.Contains(l, "event=done"), strings.Contains(l, "event=rolled-back"):
			f := strings.Fields(l)
			var ev, ro string
			for _, x := range f {
				if v, ok := strings.CutPrefix(x, "event="); ok {
					ev = v
				}
				if v, ok := strings.CutPrefix(x, "rollout="); ok {
					ro = v[len(v)-12:]
				}
			}
			if ro == sha(t, "v3")[:12] || ro == sha(t, "v4")[:12] || ro == sha(t, "v6")[:12] {
				order = append(order, ev+":"+ro)
			}
		}
	}
	want := []string{"started:" + sha(t, "v3")[:12], "done:" + sha(t, "v3")[:12], "started:" + sha(t, "v6")[:12], "done:" + sha(t, "v6")[:12]}
	if !slices.Equal(order, want) {
		t.Errorf("roll-outs %v, want %v", order, want)
	}
}

// TestWithoutSupervisorUpgradeDrivesItself: with the supervisor stopped,
// lodis upgrade rolls the drop out all the same and says it could not have
// the remedies held.
func TestWithoutSupervisorUpgradeDrivesItself(t *testing.T) {
	ctx := context.Background()
	start := time.Now()
	if _, err := m.Systemctl(ctx, "stop", "lodis-supervisor.service"); err != nil {
		t.Fatal(err)
	}
	defer func() {
		m.Systemctl(ctx, "start", "lodis-supervisor.service")
		testenv.WaitFor(ctx, 20*time.Second, func() (bool, string) { _, err := status(ctx); return err == nil, fmt.Sprint(err) })
	}()
	for i := range nPorts {
		mustHealth(t, port(i))
	}
	runs := upgradeRuns(t)
	drop(t, bins["v7"], 0o755)
	awaitUpgrade(t, runs, 60*time.Second)
	ro := lastRollout(t)
	if ro == nil || ro.To != sha(t, "v7") || ro.Phase != rollout.PhaseDone {
		t.Fatalf("roll-out %+v, want done on v7", ro)
	}
	for i := range nPorts {
		if h := mustHealth(t, port(i)); h.SHA256 != sha(t, "v7") {
			t.Errorf("port %d runs %.12s, want %.12s", port(i), h.SHA256, sha(t, "v7"))
		}
	}
	if len(journalGrep(t, start, "the supervisor did not take the hold of its worker remedies")) != 1 {
		t.Error("lodis upgrade does not say the supervisor could not hold its remedies")
	}
	if s := m.State(ctx, "lodis-supervisor.service"); s != "inactive/dead" {
		t.Errorf("lodis-supervisor.service is %s: the roll-out started a stopped supervisor", s)
	}
}
