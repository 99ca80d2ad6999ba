package security

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// quarantined lists what lies in rejected/*-quarantine*/ under name.
func quarantined(t testing.TB, name string) []string {
	t.Helper()
	ms, _ := filepath.Glob(host(store + "/rejected/*-quarantine*/" + name))
	return ms
}

// TestCorruptStateNeverStopsUpgrades: each corrupt or hostile state file —
// a truncated or garbage rollout.json or releases.json, "{}", a missing
// current, leftovers of a killed run — is quarantined (kept for
// inspection) and rebuilt, and the next good drop is processed.
func TestCorruptStateNeverStopsUpgrades(t *testing.T) {
	type plant func(t *testing.T) // makes the bad state, as root
	write := func(name string, b []byte) plant {
		return func(t *testing.T) {
			if err := os.WriteFile(host(store+"/"+name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	truncated := func(name string) plant {
		return func(t *testing.T) {
			b, err := os.ReadFile(host(store + "/" + name))
			if err != nil || len(b) < 10 {
				dropGood(t) // makes both state files
				if b, err = os.ReadFile(host(store + "/" + name)); err != nil || len(b) < 10 {
					t.Fatalf("no %s to truncate: %v", name, err)
				}
			}
			write(name, b[:len(b)/2])(t)
		}
	}
	garbage := []byte("\x00\xff not json at all \x1b[2J")
	cases := []struct {
		name       string
		plant      plant
		quarantine string // what must be found quarantined; "" for none
	}{
		{"rollout.json truncated", truncated("rollout.json"), "rollout.json"},
		{"rollout.json garbage", write("rollout.json", garbage), "rollout.json"},
		{"rollout.json {}", write("rollout.json", []byte("{}")), "rollout.json"},
		{"releases.json truncated", truncated("releases.json"), "releases.json"},
		{"releases.json garbage", write("releases.json", garbage), "releases.json"},
		{"releases.json bad entry", write("releases.json", []byte(`{"releases":{"../../etc":{"sha256":"../../etc"}}}`)), "releases.json"},
		{"missing current", func(t *testing.T) {
			if err := os.Remove(host(store + "/current")); err != nil {
				t.Fatal(err)
			}
		}, ""},
		{"leftover candidate and taken drop", func(t *testing.T) {
			sh(t, "d="+store+"/releases/.candidate-1234 && mkdir -p $d && cp /bin/true $d/app && cp /bin/true "+incoming+"/.taken-1234")
		}, ".candidate-1234"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			had := len(quarantined(t, c.quarantine))
			c.plant(t)
			dropGood(t)
			if c.quarantine != "" {
				if n := len(quarantined(t, c.quarantine)); n != had+1 {
					t.Errorf("%d quarantined %s, want %d", n, c.quarantine, had+1)
				}
			}
			currentInStore(t)
			if _, err := os.Stat(host(incoming + "/.taken-1234")); err == nil {
				t.Error("the leftover taken drop is still in incoming/")
			}
		})
	}
}

// TestForgedRolloutState: rollout.json naming a unit that is not lodis's
// (and a release to reject). User lodis cannot write it; written by root, it
// is validated on load: quarantined, the foreign unit untouched, the named
// release not rejected, and the next drop processed.
func TestForgedRolloutState(t *testing.T) {
	if out, err := as("lodis", "/bin/sh", "-c", "echo '{}' > "+store+"/rollout.json"); err == nil {
		t.Fatalf("user lodis wrote rollout.json: %s", out)
	}
	// The victim: a unit root runs that lodis has no business with.
	if err := m.WriteFile("/etc/systemd/system/victim.service", []byte("[Service]\nExecStart=/bin/sleep infinity\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sh(t, "systemctl daemon-reload && systemctl start victim.service")
	defer sh(t, "systemctl stop victim.service")
	pid := mainPID("victim.service")
	r := releases(t)
	var other string // a release in the store, not active
	for _, e := range r.Releases {
		if e.State == "available" || e.State == "previous" {
			other = e.SHA256
			break
		}
	}
	if other == "" {
		t.Fatalf("no release other than the active one in the store: %+v", r.Releases)
	}
	now := time.Now().UTC()
	forged := map[string]any{
		"id": now.Format("20060102T150405Z") + "-forged", "kind": "upgrade", "from": r.Active, "to": other,
		"phase": "rolling", "units": []string{"victim.service", "lodis@22.service"}, "moved": []string{},
		"current": "victim.service", "canary_passed": true, "started": now, "updated": now, "events": []any{},
	}
	b, _ := json.Marshal(forged)
	had := len(quarantined(t, "rollout.json"))
	if err := os.WriteFile(host(store+"/rollout.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	dropGood(t)
	if now := mainPID("victim.service"); now != pid {
		t.Errorf("victim.service was acted on: main pid %d → %d", pid, now)
	}
	after := releases(t)
	for _, e := range after.Releases {
		if e.SHA256 == other && e.State == "rejected" {
			t.Errorf("the forged roll-out had release %.12s rejected: %s", other, e.Reason)
		}
	}
	found := false
	for _, e := range after.Releases {
		found = found || e.SHA256 == other
	}
	if !found {
		t.Errorf("release %.12s is gone from the store after the forged roll-out", other)
	}
	if n := len(quarantined(t, "rollout.json")); n != had+1 {
		t.Errorf("%d quarantined rollout.json, want %d", n, had+1)
	}
	if log := journal("lodis-upgrade", 200); !strings.Contains(log, "victim.service") {
		t.Logf("the upgrade's log does not name the forged unit:\n%s", log)
	}
}
