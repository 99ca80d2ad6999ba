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
	installed, err := os.ReadFile(filepath.Join(m.Root, "/usr/bin/lodis"))
	if err != nil {
		t.Fatal(err)
	}
	rolloutBefore := lastRollout(t)
	runs := upgradeRuns(t)
	dropBytes(t, installed, 0o755)
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

// TestBadDropsAreRejected: each bad binary is moved to rejected/ with its
// reason, and nothing running changes (the one that fails its health check
// after the canary switch is rolled back).
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
		{"text file", []byte("#!/bin/sh\necho not lodis\n"), 0o755, "elf: not an ELF executable", false},
		{"another architecture", read("arm64"), 0o755, "elf: built for arm64 (EM_AARCH64); this machine runs amd64", false},
		{"no execute bit", good, 0o644, "file: not executable: mode 0644", false},
		{"selftest fails", read("selftest-fails"), 0o755, "selftest: `lodis selftest` exited with status 1", false},
		{"exits at start-up", read("exit-at-start"), 0o755, "version: `lodis version` exited with status 3", false},
		{"unhealthy after the canary switch", read("serve-unhealthy"), 0o755, "/__/health answered 503", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := releases(t)
			h0 := mustHealth(t, port(0)) // a running worker that must not notice
			runs := upgradeRuns(t)
			dropBytes(t, c.content, c.mode)
			awaitUpgrade(t, runs, 60*time.Second)

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
// load; a new build is dropped; lodis upgrade hands it to the supervisor,
// which moves every port to it with no request failing, shows the roll-out
// in lodis status while it runs, and moves itself last.
func TestRolloutUnderLoadLosesNothing(t *testing.T) {
	ctx := context.Background()
	start := time.Now()
	ports := make([]int, nPorts)
	for i := range ports {
		ports[i] = port(i)
		mustHealth(t, ports[i]) // every port has a running worker
	}
	supBefore := supervisorPID(t)
	// 800 req/s over 20 keep-alive connections; a request net/http would
	// have re-sent on a fresh connection counts as failed.
	targets := make([]string, len(ports))
	for i, p := range ports {
		targets[i] = fmt.Sprintf("http://127.0.0.1:%d/", p)
	}
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type outcome struct {
		res *load.Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		r, err := load.Run(lctx, load.Options{Targets: targets, Rate: 800, Conns: 20, Duration: 90 * time.Second})
		done <- outcome{r, err}
	}()
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
	cancel()
	o := <-done
	if o.res == nil {
		t.Fatalf("load: %v", o.err)
	}
	ok, failed := o.res.OK, o.res.Failed

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
		t.Errorf("%d of %d requests failed during the roll-out: %v", failed, ok+failed, o.res.Failures)
	}
	if ok < 4000 {
		t.Errorf("only %d requests answered: the load did not run", ok)
	}
	if len(journalGrep(t, start, "roll-out handed to the supervisor")) != 1 {
		t.Errorf("lodis upgrade did not hand the roll-out to the supervisor")
	}
	if len(journalGrep(t, start, "rolled out: every running worker is on up-v5")) != 1 {
		t.Errorf("lodis upgrade's last line does not say the drop was rolled out")
	}

	// Every step is an event, in order, and the supervisor moved last.
	var kinds []string
	lastMoved, restartAsked := time.Time{}, time.Time{}
	for _, e := range ro.Events {
		kinds = append(kinds, e.Kind)
		switch e.Kind {
		case "moved":
			lastMoved = e.Time
		case "supervisor-restart":
			restartAsked = e.Time
		}
	}
	if n := strings.Count(strings.Join(kinds, " "), "moved "); n < nPorts {
		t.Errorf("%d moved events, want %d: %v", n, nPorts, kinds)
	}
	for _, k := range []string{"started", "flipped", "canary-soak", "canary-passed", "workers-moved", "supervisor-restart", "resumed", "done"} {
		if !slices.Contains(kinds, k) {
			t.Errorf("no %s event: %v", k, kinds)
		}
	}
	supAfter := supervisorPID(t)
	if supAfter == 0 || supAfter == supBefore {
		t.Fatalf("supervisor pid %d → %d: it did not restart onto the new release", supBefore, supAfter)
	}
	if got := exeSHA(t, supAfter); got != want {
		t.Errorf("the supervisor runs %.12s (/proc/%d/exe), want the new release %.12s", got, supAfter, want)
	}
	if restartAsked.IsZero() || restartAsked.Before(lastMoved) {
		t.Errorf("supervisor restart asked at %s, last worker moved at %s: the supervisor must move last", restartAsked, lastMoved)
	}
	// No double restarts: the supervisor mended no worker meanwhile.
	for _, l := range unitJournalGrep(t, "lodis-supervisor", start, "event=remedy") {
		if strings.Contains(l, "result=done") {
			t.Errorf("the supervisor mended a worker during the roll-out: %s", l)
		}
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
		if s.SHA256 != want {
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

// TestTwoDropsWithinOneSecond: one roll-out, ending on the newer.
func TestTwoDropsWithinOneSecond(t *testing.T) {
	start := time.Now()
	runs := upgradeRuns(t)
	drop(t, bins["v6"], 0o755)
	time.Sleep(600 * time.Millisecond)
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

// TestManualRollback: `lodis rollback` returns every running port to the
// previous release, through the supervisor; run again, as user lodis this
// time, it comes back.
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
	if !strings.Contains(out, "roll-out handed to the supervisor") || !strings.Contains(out, "rolled back: every running worker is on") {
		t.Errorf("lodis rollback did not hand the roll-out to the supervisor or does not say how it ended:\n%s", out)
	}
	if ro := lastRollout(t); ro == nil || ro.Kind != rollout.KindRollback || ro.Phase != rollout.PhaseDone {
		t.Errorf("last roll-out %+v, want a rollback, done", ro)
	}

	out, err = m.Output(context.Background(), "runuser", "-u", "lodis", "--", "lodis", "rollback", "--canary-soak", "1s")
	if err != nil {
		t.Fatalf("lodis rollback as user lodis: %v", err)
	}
	if a := releases(t).Active; a != before.Active {
		t.Fatalf("active %.12s after the second rollback (as lodis), want %.12s again\n%s", a, before.Active, out)
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
// it watches the canary. The supervisor systemd starts again takes the
// roll-out up; the canary had not passed, so every port ends on the old
// release, never a mix, the supervisor itself included, and its events say
// so.
func TestSupervisorKilledMidRollout(t *testing.T) {
	ctx := context.Background()
	start := time.Now()
	old := releases(t).Active
	for i := range nPorts {
		mustHealth(t, port(i))
	}
	killed := supervisorPID(t)
	runs := upgradeRuns(t)
	drop(t, bins["v2"], 0o755)
	// The canary is on the new release and being watched.
	waitRollout(t, sha(t, "v2"), 30*time.Second, "canary soak", func(st *rollout.State) bool {
		return st.Phase == rollout.PhaseRolling && !st.CanaryPassed && len(st.Moved) == 1
	})
	if _, err := m.Sh(ctx, fmt.Sprintf("kill -9 %d", killed)); err != nil {
		t.Fatal(err)
	}
	awaitUpgrade(t, runs, 90*time.Second)

	st := persisted(t)
	if st.To != sha(t, "v2") || st.Phase != rollout.PhaseRolledBack || !strings.Contains(st.Reason, "interrupted before the canary passed") {
		t.Fatalf("roll-out after the kill: %s, %q; want rolled back because it was interrupted", st.Phase, st.Reason)
	}
	var kinds []string
	for _, e := range st.Events {
		kinds = append(kinds, e.Kind)
	}
	if !slices.Contains(kinds, "resumed") || !slices.Contains(kinds, "rolled-back") {
		t.Errorf("roll-out events %v: want resumed and rolled-back", kinds)
	}
	r := releases(t)
	if r.Active != old {
		t.Errorf("active release %.12s, want the old %.12s", r.Active, old)
	}
	for i := range nPorts {
		if h := mustHealth(t, port(i)); h.SHA256 != old {
			t.Errorf("port %d runs %.12s, want the old release %.12s: a mix left behind", port(i), h.SHA256, old)
		}
	}
	if len(r.Rejected) == 0 || r.Rejected[0].SHA256 != sha(t, "v2") || r.Rejected[0].Stage != "rollout" {
		t.Errorf("the interrupted release is not marked rejected: %+v", r.Rejected[:min(1, len(r.Rejected))])
	}
	// The supervisor that took it up ran the new binary (current pointed
	// at it when systemd started it again); it moved back onto the old one.
	err := testenv.WaitFor(ctx, 30*time.Second, func() (bool, string) {
		pid := supervisorPID(t)
		if pid == 0 || pid == killed {
			return false, fmt.Sprintf("supervisor pid %d", pid)
		}
		got := exeSHA(t, pid)
		return got == old, fmt.Sprintf("supervisor pid %d runs %.12s", pid, got)
	})
	if err != nil {
		t.Errorf("the supervisor did not end on the old release: %v", err)
	}
	// The supervisor's events say which way it went.
	for _, want := range []string{"action=taking-up", "action=resumed", "action=rolled-back"} {
		if len(unitJournalGrep(t, "lodis-supervisor", start, want)) == 0 {
			t.Errorf("no supervisor event %s in its journal", want)
		}
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
		"-H", "Content-Type: application/json", "-d", fmt.Sprintf(`{"kind":"rollback","sha256":"%s"}`, prev), "http://supervisor/v1/rollout")
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
	// lodis upgrade relays the supervisor's steps: the first roll-out ended
	// before the second started, and v4 was never rolled out.
	var order []string
	for _, l := range journalGrep(t, start, "by=supervisor") {
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

// TestRolloutWithTheSupervisorAtItsStartLimit: the supervisor was started as
// often as its unit's start limit allows (StartLimitBurst= within
// StartLimitIntervalSec=, e.g. an operator restarting it, or a few crashes
// and roll-outs in a minute); a roll-out still moves it onto the new
// release, because a deliberate restart is not counted as a crash.
func TestRolloutWithTheSupervisorAtItsStartLimit(t *testing.T) {
	ctx := context.Background()
	const unit = "lodis-supervisor.service"
	burst, err := strconv.Atoi(m.Prop(ctx, unit, "StartLimitBurst"))
	if err != nil || burst < 1 {
		t.Fatalf("StartLimitBurst of %s: %q", unit, m.Prop(ctx, unit, "StartLimitBurst"))
	}
	// A fresh count, then every start the limit allows.
	if _, err := m.Systemctl(ctx, "reset-failed", unit); err != nil {
		t.Fatal(err)
	}
	for i := range burst {
		if _, err := m.Systemctl(ctx, "restart", unit); err != nil {
			t.Fatalf("restart %d of %d: %v (%s)", i+1, burst, err, m.State(ctx, unit))
		}
	}
	t.Cleanup(func() { m.Systemctl(ctx, "reset-failed", unit) })
	if err := testenv.WaitFor(ctx, 20*time.Second, func() (bool, string) { _, err := status(ctx); return err == nil, fmt.Sprint(err) }); err != nil {
		t.Fatal(err)
	}
	for i := range nPorts {
		mustHealth(t, port(i))
	}
	supBefore := supervisorPID(t)
	runs := upgradeRuns(t)
	drop(t, bins["v8"], 0o755)
	awaitUpgrade(t, runs, 60*time.Second)
	want := sha(t, "v8")
	err = testenv.WaitFor(ctx, 20*time.Second, func() (bool, string) {
		ro := lastRollout(t)
		return ro != nil && ro.To == want && ro.Phase.Finished(), fmt.Sprintf("roll-out %+v", ro)
	})
	if err != nil {
		t.Fatal(err)
	}
	if ro := lastRollout(t); ro.Phase != rollout.PhaseDone {
		t.Errorf("roll-out ended %s (%s), want done", ro.Phase, ro.Reason)
	}
	if s := m.State(ctx, unit); s != "active/running" {
		t.Fatalf("%s is %s after the roll-out (result %s), want active/running", unit, s, m.Prop(ctx, unit, "Result"))
	}
	supAfter := supervisorPID(t)
	if supAfter == supBefore {
		t.Fatalf("supervisor pid %d unchanged: it was not restarted onto the new release", supAfter)
	}
	if got := exeSHA(t, supAfter); got != want {
		t.Errorf("the supervisor runs %.12s, want the new release %.12s", got, want)
	}
}

// TestWithoutSupervisorUpgradeDrivesItself: with the supervisor stopped,
// lodis upgrade rolls the drop out by itself and says so.
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
	if len(journalGrep(t, start, "no supervisor drives roll-outs here: driving the roll-out in this process")) != 1 {
		t.Error("lodis upgrade does not say it drove the roll-out itself")
	}
	if s := m.State(ctx, "lodis-supervisor.service"); s != "inactive/dead" {
		t.Errorf("lodis-supervisor.service is %s: the roll-out started a stopped supervisor", s)
	}
}
