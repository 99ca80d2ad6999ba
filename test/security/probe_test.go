package security

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lodis/lodis/internal/health"
)

var healthClient = &health.Client{Timeout: 3 * time.Second, UserAgent: "lodis-security-test"}

// healthAt is the health report of the worker at addr.
func healthAt(addr string) (health.Report, error) {
	r, _, err := healthClient.GetURL(context.Background(), "http://"+addr+"/__/health")
	return r, err
}

// spoofer answers every request healthy, as whoever binds 127.0.0.1:PORT
// could; Hits counts what it was asked.
type spoofer struct {
	Hits atomic.Int64
	srv  *http.Server
}

func startSpoofer(t *testing.T, addr string) *spoofer {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("spoofer: %v", err)
	}
	s := &spoofer{}
	s.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.Hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(health.Report{Status: "ok", PID: 4242, Version: "spoofed", SHA256: "spoofed"})
	})}
	go s.srv.Serve(l)
	t.Cleanup(func() { s.srv.Close() })
	return s
}

// TestIPv6OnlyPortCannotBeVouchedFor: a port listening on [::1] only, and a
// spoofer on 127.0.0.1 of the same port answering healthy. The supervisor
// probes [::1] (it shows the real worker, and restarts it when it hangs,
// whatever the spoofer says), and a roll-out checks [::1] too (a release
// that turns unhealthy is rolled back although the spoofer answers
// healthy). The spoofer is asked nothing.
func TestIPv6OnlyPortCannotBeVouchedFor(t *testing.T) {
	real := net.JoinHostPort("::1", strconv.Itoa(portV6Only))
	unit := fmt.Sprintf("lodis@%d.service", portV6Only)
	sp := startSpoofer(t, loopback(portV6Only))
	stopWorkers(t)
	h, err := healthAt(real)
	if err != nil {
		t.Fatalf("the port on [::1] does not serve: %v", err)
	}
	if err := waitFor(10*time.Second, func() bool {
		in := instance(t, portV6Only)
		return in.Health != nil && in.Health.OK && in.PID == uint32(h.PID) && in.Version == h.Version
	}); err != nil {
		t.Fatalf("the supervisor does not show the real worker (pid %d, %s): %+v", h.PID, h.Version, instance(t, portV6Only))
	}
	// A hung worker: the supervisor must see it, not the spoofer.
	pid := mainPID(unit)
	sh(t, fmt.Sprintf("kill -STOP %d", pid))
	err = waitFor(15*time.Second, func() bool { n := mainPID(unit); return n != pid })
	sh(t, fmt.Sprintf("kill -CONT %d 2>/dev/null || true", pid))
	if err != nil {
		t.Fatalf("the hung worker on [::1] was not restarted: %+v", instance(t, portV6Only))
	}
	if n := sp.Hits.Load(); n != 0 {
		t.Fatalf("the supervisor asked the spoofer %d times", n)
	}

	// A roll-out: the canary turns unhealthy after 1 s.
	stopWorkers(t)
	if _, err := healthAt(real); err != nil {
		t.Fatal(err)
	}
	// A soak long enough for the canary to fail twice once it turns.
	soak := "/etc/systemd/system/lodis-upgrade.service.d/zz-soak.conf"
	if err := m.WriteFile(soak, []byte("[Service]\nExecStart=\nExecStart=/usr/bin/lodis upgrade --canary-soak 4s --settle 300ms\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sh(t, "systemctl daemon-reload")
	defer sh(t, "rm -f "+soak+" && systemctl daemon-reload")
	before := releases(t)
	runs := upgradeRuns()
	drop(t, "unhealthy-after-1s")
	awaitUpgrade(t, runs, 90*time.Second)
	after := releases(t)
	if after.Active != before.Active {
		t.Errorf("the release that turned unhealthy was rolled out (active %.12s): the roll-out believed the spoofer", after.Active)
	}
	if after.Rollout == nil || after.Rollout.To != sha(t, "unhealthy-after-1s") || after.Rollout.Phase != "rolled-back" {
		t.Errorf("want the roll-out of unhealthy-after-1s rolled back; last roll-out %+v", after.Rollout)
	}
	if n := sp.Hits.Load(); n != 0 {
		t.Errorf("the roll-out asked the spoofer %d times", n)
	}
}

// TestNonLoopbackPortProbed: a port listening on one non-loopback address
// (nsAddr, in the test's network namespace) is probed there by the
// supervisor — it stays healthy, is not restarted as hung — and by a
// roll-out, which moves it to the new release.
func TestNonLoopbackPortProbed(t *testing.T) {
	ctx := context.Background()
	addr := net.JoinHostPort(nsAddr, strconv.Itoa(portNonLoopback))
	// The units that probe: their IP firewall lets the probes through. (The
	// firewall is BPF: where the kernel does not give systemd one, as in
	// some containers, the probes below get through regardless, and only
	// this says whether they would.)
	for _, u := range []string{"lodis-supervisor.service", "lodis-upgrade.service", "lodis-rollout@" + releases(t).Active + ".service"} {
		allow := m.Prop(ctx, u, "IPAddressAllow")
		if !strings.Contains(" "+allow+" ", " "+nsAddr+"/32 ") && !strings.Contains(" "+allow+" ", " "+nsAddr+" ") {
			t.Errorf("%s IPAddressAllow=%s: its probes of %s would be dropped", u, allow, addr)
		}
	}
	unit := fmt.Sprintf("lodis@%d.service", portNonLoopback)
	stopWorkers(t)
	h, err := healthAt(addr)
	if err != nil {
		t.Fatalf("the port on %s does not serve: %v", nsAddr, err)
	}
	if err := waitFor(10*time.Second, func() bool {
		in := instance(t, portNonLoopback)
		return in.Health != nil && in.Health.OK && in.PID == uint32(h.PID)
	}); err != nil {
		t.Fatalf("the supervisor does not see the worker on %s healthy: %+v", nsAddr, instance(t, portNonLoopback))
	}
	pid := mainPID(unit)
	time.Sleep(3 * time.Second) // six probe rounds
	if in := instance(t, portNonLoopback); in.Health == nil || !in.Health.OK || mainPID(unit) != pid {
		t.Fatalf("the worker on %s was found unhealthy or restarted: %+v", nsAddr, in)
	}
	name := dropGood(t)
	h, err = healthAt(addr)
	if err != nil || h.SHA256 != sha(t, name) {
		t.Fatalf("the port on %s does not run the new release after the roll-out: %+v %v", nsAddr, h, err)
	}
}
