package security

import (
	"context"
	"strings"
	"testing"
	"time"
)

// hookScript is the supervisor's --on-event hook in this machine: it keeps
// the environment of roll-out events, and once armed, leaves a child
// behind and outlives its timeout.
const hookScript = `#!/bin/sh
if [ "$LODIS_EVENT_KIND" = rollout ]; then
	env | grep '^LODIS_EVENT_' >> /run/lodis/hook-env
fi
if [ -e /run/lodis/hook-arm ] && mkdir /run/lodis/hook-slept 2>/dev/null; then
	sleep 300 &
	sleep 301
fi
`

const hookPath = "/usr/local/lib/lodis-test-hook"

// controls reports the terminal control bytes in s (ESC, BEL, CSI …).
func controls(s string) bool {
	for _, r := range s {
		if r < 0x20 && r != '\n' && r != '\t' || r == 0x7f || r >= 0x80 && r < 0xa0 {
			return true
		}
	}
	return false
}

// TestWorkerTextSanitised: a release whose version (worker-supplied text:
// its health answer) carries terminal escape sequences reaches neither a
// terminal (lodis status, lodis releases) nor a hook's environment raw.
func TestWorkerTextSanitised(t *testing.T) {
	ctx := context.Background()
	sh(t, "rm -f /run/lodis/hook-env")
	stopWorkers(t)
	if !serves(loopback(portA), 5*time.Second) {
		t.Fatal("port does not serve")
	}
	runs := upgradeRuns()
	drop(t, "escapes")
	awaitUpgrade(t, runs, 90*time.Second)
	if a := releases(t).Active; a != sha(t, "escapes") {
		t.Fatalf("the release with escapes in its version was not rolled out (active %.12s)\n%s", a, journal("lodis-upgrade", 20))
	}
	if err := waitFor(10*time.Second, func() bool { return strings.Contains(instance(t, portA).Version, "owned") }); err != nil {
		t.Fatalf("the supervisor does not show the worker's version: %+v", instance(t, portA))
	}
	for _, argv := range [][]string{{"lodis", "status"}, {"lodis", "releases"}} {
		out, err := m.Output(ctx, argv...)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "owned") {
			t.Errorf("%v does not show the version at all:\n%s", argv, out)
		}
		if controls(out) {
			t.Errorf("%v prints control characters: %q", argv, out)
		}
	}
	// /run is the machine's own tmpfs: read inside.
	hookEnv := func() string { out, _ := m.Output(ctx, "cat", "/run/lodis/hook-env"); return out }
	err := waitFor(10*time.Second, func() bool { return strings.Contains(hookEnv(), "owned") })
	b := hookEnv()
	if err != nil {
		t.Errorf("no roll-out event naming the version reached the hook:\n%s", b)
	} else if controls(b) {
		t.Errorf("the hook's environment carries control characters: %q", b)
	}
	dropGood(t)
}

// TestHookKilledWithItsChildren: a hook that outlives --on-event-timeout
// is killed with its whole process group: the child it left running in the
// background is gone too.
func TestHookKilledWithItsChildren(t *testing.T) {
	ctx := context.Background()
	sh(t, "rm -rf /run/lodis/hook-slept && touch /run/lodis/hook-arm")
	defer sh(t, "rm -f /run/lodis/hook-arm")
	// Any event runs the hook: a worker restarted.
	sh(t, "systemctl restart lodis@"+itoa(portB)+".service")
	sleeping := func() string {
		out, _ := m.Output(ctx, "pgrep", "-a", "-f", "^sleep 30[01]$")
		return strings.TrimSpace(out)
	}
	if err := waitFor(10*time.Second, func() bool { return strings.Count(sleeping(), "\n") == 1 }); err != nil {
		t.Fatalf("the hook did not leave its two sleeps running: %q\n%s", sleeping(), journal("lodis-supervisor", 20))
	}
	if err := waitFor(5*time.Second, func() bool { return sleeping() == "" }); err != nil {
		t.Fatalf("5 s later, the hook's processes still run: %q", sleeping())
	}
	if log := journal("lodis-supervisor", 100); !strings.Contains(log, "killed after") {
		t.Errorf("the supervisor did not log the hook's timeout:\n%s", log)
	}
}
