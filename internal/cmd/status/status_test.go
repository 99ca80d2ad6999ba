package status

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/lodis/lodis/internal/statusapi"
	"github.com/lodis/lodis/internal/systemd"
)

func TestStatusTable(t *testing.T) {
	now := time.Now()
	sha := "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	snap := statusapi.Snapshot{Connected: true, PID: 99, Version: "v2", SHA256: sha, Since: now.Add(-time.Minute), Instances: []statusapi.InstanceStatus{
		{Port: "8080", Socket: "active/running", Worker: "active/running", PID: 123, Version: "v2", SHA256: sha, UptimeSeconds: 65, Restarts: 1,
			Health: &statusapi.ProbeStatus{OK: true, At: now, LatencyMS: 1.25}},
		{Port: "8081", Socket: "failed/failed", SocketResult: "trigger-limit-hit", Worker: "inactive/dead",
			Health: &statusapi.ProbeStatus{OK: false, Error: "timeout", Failures: 2, At: now}},
	}, Rollout: &statusapi.RolloutStatus{ID: "20260102T150405Z-0123456789ab", Kind: "upgrade", From: strings.Repeat("f", 64), To: sha,
		FromVersion: "v1", ToVersion: "v2", Phase: "rolling", Running: true, Moved: 1, Total: 2, Current: "lodis@8081.service"}}
	var b bytes.Buffer
	printTable(&b, snap, false, now)
	out := b.String()
	for _, w := range []string{"PORT", "HEALTH", "8080  active/running", "123", "v2       0123456789ab", "1m5s", "ok 1.2ms",
		"failed/failed (trigger-limit-hit)", "FAILING x2 (timeout)", "2 instances; supervisor pid 99, version v2 (0123456789ab)",
		"roll-out 20260102T150405Z-0123456789ab: upgrade v1 (ffffffffffff) → v2 (0123456789ab): rolling, moved 1/2, now lodis@8081.service"} {
		if !strings.Contains(out, w) {
			t.Errorf("table lacks %q:\n%s", w, out)
		}
	}
	// A port served by its alternate worker says so in one field.
	snap.Instances[0].WorkerUnit = "lodis-alt@8080.service"
	b.Reset()
	printTable(&b, snap, false, now)
	if !strings.Contains(b.String(), " active/running(alt)  123 ") {
		t.Errorf("table does not mark the alternate worker:\n%s", b.String())
	}
	snap.Instances[0].WorkerUnit = ""
	snap.Rollout.Running, snap.Rollout.Phase, snap.Rollout.Moved, snap.Rollout.Finished = false, "rolled-back", 0, now.Add(-3*time.Second)
	snap.Rollout.Reason = "canary lodis@8080.service: /__/health answered 503"
	b.Reset()
	printTable(&b, snap, false, now)
	if w := "last roll-out 20260102T150405Z-0123456789ab: upgrade v1 (ffffffffffff) → v2 (0123456789ab): rolled-back, moved 0/2, ended 3s ago (canary lodis@8080.service: /__/health answered 503)"; !strings.Contains(b.String(), w) {
		t.Errorf("table lacks %q:\n%s", w, b.String())
	}
	s := fromUnits([]systemd.UnitState{
		{Name: "lodis@8081.socket", ActiveState: "active", SubState: "listening"},
		{Name: "lodis@8080.service", ActiveState: "active", SubState: "running", MainPID: 5},
		{Name: "lodis@8080.socket", ActiveState: "active", SubState: "running"},
	})
	if len(s.Instances) != 2 || s.Instances[0].Port != "8080" || s.Instances[0].PID != 5 || s.Instances[1].Worker != "inactive/dead" {
		t.Errorf("fromUnits: %+v", s.Instances)
	}
}
