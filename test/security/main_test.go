// Package security attacks lodis's trust boundaries against a real systemd,
// each attack made with the identity it needs: user lodis (what the
// supervisor and any --on-event hook have), a member of group lodis who is
// not user lodis, a plain local user, and root-planted state that root's own
// code must not trust. docs/security.md lists every rule and the test here
// that proves it.
//
// The machine lives in a network namespace the test makes (netns_test.go):
// its loopback and one non-loopback address, 10.77.88.1 on a veth
// interface inside it, are all the network there is, so floods, spoofers and probes
// never leave it. Ports 18800-18899, inside that namespace.
package security

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/lodis/lodis/internal/buildinfo"
	"github.com/lodis/lodis/internal/testenv"
)

// Ports: the general ones run workers that roll-outs move.
const (
	portA, portB    = 18800, 18801
	portStorm       = 18810 // the trigger-limit storm
	portFlood       = 18820 // the connection flood and the slowloris
	portV6Only      = 18830 // listens on [::1] only
	portNonLoopback = 18840 // listens on nsAddr only
)

// The identities the attacks take, besides root and user lodis.
const (
	groupMember = "lodismate" // in group lodis, not user lodis
	plainUser   = "plainuser" // in no lodis group
)

var (
	m    *testenv.Machine
	bins map[string]string // name → path on the host
)

func TestMain(tm *testing.M) {
	if os.Getenv(netnsEnv) == "" {
		os.Exit(inNetns())
	}
	testenv.Exit("test/security", func() (int, error) { return run(tm) })
}

// run builds the binaries the tests drop, then boots the machine.
func run(tm *testing.M) (int, error) {
	repo, dir, err := testenv.Workspace("lodis-security-bins-")
	if err != nil {
		return 1, err
	}
	defer os.RemoveAll(dir)
	specs := map[string]testenv.Spec{
		"unhealthy-after-1s": {Version: "sec-unhealthy-after-1s", Fault: buildinfo.FaultUnhealthyAfter1s},
		// Its version is worker-supplied text that reaches terminals.
		"escapes": {Version: "sec-\x1b]0;owned\x07\x1b[2J"},
		// The status API test's releases: an unsigned one, two signed.
		"unsigned": {Version: "sec-unsigned"}, "signed-a": {Version: "sec-signed-a"}, "signed-b": {Version: "sec-signed-b"},
	}
	for i := 1; i <= nGood; i++ {
		specs[good(i)] = testenv.Spec{Version: good(i)}
	}
	if bins, err = testenv.BuildAll(repo, dir, specs); err != nil {
		return 1, err
	}
	return testenv.Main(tm, testenv.Suite{
		Machine:      testenv.Options{Name: "lodis-security-test"},
		SetupTimeout: 3 * time.Minute,
		Journal:      []string{"lodis-supervisor", "lodis-upgrade", "polkit"},
	}, setup), nil
}

// nGood good releases, "sec-good-1" … : the tests that need a good drop
// take them in turn (nextGood); dropping one the store holds already is a
// roll-out like any other.
const nGood = 4

func good(i int) string { return fmt.Sprintf("sec-good-%d", i) }

var goodUsed = 0

// nextGood is a good release that is not the active one.
func nextGood(t testing.TB) string {
	t.Helper()
	active := "" // unknown when the store cannot be listed (no current)
	if r, err := tryReleases(); err == nil {
		active = r.Active
	}
	for range nGood {
		goodUsed++
		if name := good(goodUsed%nGood + 1); sha(t, name) != active {
			return name
		}
	}
	t.Fatal("no good release other than the active one")
	return ""
}

func setup(ctx context.Context, mc *testenv.Machine) error {
	m = mc
	if err := m.WriteFile(hookPath, []byte(hookScript), 0o755); err != nil {
		return err
	}
	for path, text := range map[string]string{
		// A short soak and settle keep the suite lean.
		testenv.UpgradeDropIn: "[Service]\nExecStart=\nExecStart=/usr/bin/lodis upgrade --canary-soak 1s --settle 300ms --max-size 50000000\n",
		"/etc/systemd/system/lodis-rollout@.service.d/test.conf": "[Service]\nExecStart=\nExecStart=/usr/bin/lodis rollback --to %i --canary-soak 1s\n",
		// Fast probing: a hung worker is restarted in about 2 s.
		testenv.SupervisorDropIn: "[Service]\nExecStart=\nExecStart=/usr/bin/lodis supervise --probe-interval 500ms --probe-timeout 400ms --probe-failures 3 --admin-group lodisadm --on-event " + hookPath + " --on-event-timeout 1s\n",
		// The storm port: a trigger limit lower than any supervisor reset
		// can outlast.
		fmt.Sprintf("/etc/systemd/system/lodis@%d.socket.d/limit.conf", portStorm):        "[Socket]\nTriggerLimitBurst=3\nTriggerLimitIntervalSec=5s\n",
		fmt.Sprintf("/etc/systemd/system/lodis@%d.socket.d/listen.conf", portV6Only):      fmt.Sprintf("[Socket]\nListenStream=\nListenStream=[::1]:%d\n", portV6Only),
		fmt.Sprintf("/etc/systemd/system/lodis@%d.socket.d/listen.conf", portNonLoopback): fmt.Sprintf("[Socket]\nListenStream=\nListenStream=%s:%d\n", nsAddr, portNonLoopback),
	} {
		if err := m.WriteFile(path, []byte(text), 0o644); err != nil {
			return err
		}
	}
	// The identities: a member of group lodis, a member of the admin group
	// (and of group lodis, to reach the status socket), a plain user.
	users := fmt.Sprintf("groupadd -r lodisadm && useradd -M -s /bin/sh %[1]s && usermod -aG lodis %[1]s && useradd -M -s /bin/sh %[2]s && useradd -M -s /bin/sh lodisadmin && usermod -aG lodis,lodisadm lodisadmin", groupMember, plainUser)
	if _, err := m.Sh(ctx, users); err != nil {
		return err
	}
	units := []string{"enable", "--now", "lodis-upgrade.path", "lodis-supervisor.service"}
	for _, p := range []int{portA, portB, portStorm, portFlood, portV6Only, portNonLoopback} {
		units = append(units, fmt.Sprintf("lodis@%d.socket", p))
	}
	if _, err := m.Sh(ctx, "systemctl daemon-reload && systemctl "+strings.Join(units, " ")); err != nil {
		return err
	}
	return testenv.WaitFor(ctx, 20*time.Second, func() (bool, string) {
		_, err := status(ctx)
		return err == nil, fmt.Sprint(err)
	})
}
