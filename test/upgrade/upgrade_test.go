package upgrade

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lodis/lodis/bench/load"
	"github.com/lodis/lodis/release"
	"github.com/lodis/lodis/rollout"
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
// load; a new build is dropped; every port ends on it and no request fails.
func TestRolloutUnderLoadLosesNothing(t *testing.T) {
	ports := make([]int, nPorts)
	for i := range ports {
		ports[i] = port(i)
		mustHealth(t, ports[i]) // every port has a running worker
	}
	// 500 req/s over 20 keep-alive connections; a request net/http would
	// have re-sent on a fresh connection counts as failed.
	targets := make([]string, len(ports))
	for i, p := range ports {
		targets[i] = fmt.Sprintf("http://127.0.0.1:%d/", p)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type outcome struct {
		res *load.Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		r, err := load.Run(ctx, load.Options{Targets: targets, Rate: 500, Conns: 20, Duration: 90 * time.Second})
		done <- outcome{r, err}
	}()
	time.Sleep(2 * time.Second)
	runs := upgradeRuns(t)
	dropAt := time.Now()
	drop(t, bins["v5"], 0o755)
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
		t.Fatalf("%d of %d requests failed during the roll-out: %v", failed, ok+failed, o.res.Failures)
	}
	if ok < 2000 {
		t.Fatalf("only %d requests answered: the load did not run", ok)
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
		if h, err := getHealth(port(i)); err != nil || h.SHA256 != r.Active {
			t.Errorf("port %d: %.12s, %v", port(i), h.SHA256, err)
		}
	}
}

// TestManualRollback: `lodis rollback` returns every running port to the
// previous release.
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
}
