package events

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

func quietLog() *logrus.Logger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

func TestEventsRing(t *testing.T) {
	ev := New(3, nil)
	var seen []uint64
	ev.Subscribe(func(e Event) { seen = append(seen, e.Seq) })
	for i := 0; i < 5; i++ {
		ev.Emit(Event{Kind: KindState, Instance: "80"})
	}
	got := ev.Since(0)
	if len(got) != 3 || got[0].Seq != 3 || got[2].Seq != 5 {
		t.Errorf("ring kept %+v, want seq 3..5", got)
	}
	if s := ev.Since(4); len(s) != 1 || s[0].Seq != 5 {
		t.Errorf("Since(4) = %+v", s)
	}
	if len(seen) != 5 || got[0].Time.IsZero() {
		t.Errorf("subscriber saw %v; time stamped: %v", seen, !got[0].Time.IsZero())
	}
	env := strings.Join(Event{Seq: 7, Kind: "remedy", Instance: "8080", Action: "restart"}.Env(), "\n")
	for _, w := range []string{"LODIS_EVENT_SEQ=7", "LODIS_EVENT_KIND=remedy", "LODIS_EVENT_INSTANCE=8080", "LODIS_EVENT_ACTION=restart", "LODIS_EVENT_FROM="} {
		if !strings.Contains(env, w) {
			t.Errorf("env lacks %s:\n%s", w, env)
		}
	}
}

func writeScript(t *testing.T, body string, mode os.FileMode) string {
	p := filepath.Join(t.TempDir(), "hook.sh")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), mode); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCheckHook(t *testing.T) {
	if err := CheckHook(writeScript(t, "exit 0\n", 0o755)); err != nil {
		t.Errorf("good hook: %v", err)
	}
	for _, c := range []struct{ path, want string }{
		{"/nonexistent/hook", "no such file"},
		{t.TempDir(), "not a regular file"},
		{writeScript(t, "exit 0\n", 0o644), "not executable"},
	} {
		err := CheckHook(c.path)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("CheckHook(%s) = %v, want one line with %q", c.path, err, c.want)
		}
	}
}

func TestHookOutcomes(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	// A hook that ends by itself gets a timeout no busy machine reaches; the
	// hanging one a short one.
	for _, c := range []struct {
		name, body string
		timeout    time.Duration
		want       string
	}{
		{"ok", "echo \"$LODIS_EVENT_KIND $LODIS_EVENT_INSTANCE\" > " + out + "\n", 20 * time.Second, "ok"},
		{"fails", "exit 3\n", 20 * time.Second, "failed"},
		{"hangs", "exec sleep 30\n", 200 * time.Millisecond, "timeout"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var mu sync.Mutex
			var outcome string
			var err error
			done := make(chan struct{})
			h := &Hook{Path: writeScript(t, c.body, 0o755), Timeout: c.timeout, Log: quietLog(),
				Done: func(_ Event, o string, e error) { mu.Lock(); outcome, err = o, e; mu.Unlock(); close(done) }}
			ctx, cancel := context.WithCancel(context.Background())
			defer func() { cancel(); h.Wait() }()
			h.Start(ctx)
			start := time.Now()
			if !h.Offer(Event{Kind: "state", Instance: "8080"}) {
				t.Fatal("queue refused the first event")
			}
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("hook never finished")
			}
			mu.Lock()
			defer mu.Unlock()
			if outcome != c.want {
				t.Errorf("outcome %q (%v), want %q", outcome, err, c.want)
			}
			if c.want == "timeout" && time.Since(start) > 15*time.Second {
				t.Errorf("a hanging hook held on for %s despite a 200 ms timeout", time.Since(start))
			}
			if c.want == "ok" {
				if b, _ := os.ReadFile(out); string(b) != "state 8080\n" {
					t.Errorf("hook saw %q, want the event in its environment", b)
				}
			}
		})
	}
}

func TestHookNeverBlocks(t *testing.T) {
	h := &Hook{Path: writeScript(t, "exec sleep 30\n", 0o755), Timeout: 10 * time.Second, Parallel: 1, Queue: 2, Log: quietLog()}
	ctx, cancel := context.WithCancel(context.Background())
	h.Start(ctx)
	start := time.Now()
	dropped := 0
	for i := 0; i < 50; i++ {
		if !h.Offer(Event{Seq: uint64(i)}) {
			dropped++
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("offering 50 events to a stuck hook took %s: Offer blocked", d)
	}
	if dropped < 45 {
		t.Errorf("dropped %d of 50 events with a queue of 2 and a stuck hook, want ≥ 45", dropped)
	}
	cancel()
	h.Wait()
}

// TestHookTimeoutKillsItsChildren: at the timeout the script's whole
// process group is killed, not just the script.
func TestHookTimeoutKillsItsChildren(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "child")
	done := make(chan string, 1)
	h := &Hook{Path: writeScript(t, "sleep 60 &\necho $! > "+pidFile+"\nwait\n", 0o755), Timeout: 300 * time.Millisecond, Log: quietLog(),
		Done: func(_ Event, o string, _ error) { done <- o }}
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); h.Wait() }()
	h.Start(ctx)
	h.Offer(Event{Kind: "state"})
	select {
	case o := <-done:
		if o != "timeout" {
			t.Fatalf("outcome %q, want timeout", o)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the hook never ended")
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("the hook's child %d outlived its timeout", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestEnvIsClean(t *testing.T) {
	env := strings.Join(Event{Message: "worker said \x1b]0;pwned\x07 and\nmore"}.Env(), "\x00")
	if strings.ContainsAny(env, "\x1b\x07\n") {
		t.Fatalf("control characters reached the hook's environment: %q", env)
	}
}
