package security

import (
	"context"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lodis/lodis/internal/release"
	"github.com/lodis/lodis/internal/statusapi"
)

// requested lists the lodis-rollout@ units systemd has loaded: one is
// loaded for every roll-out request the supervisor handed on.
func requested(t testing.TB) string {
	t.Helper()
	return strings.TrimSpace(sh(t, "systemctl list-units --all --plain --no-legend 'lodis-rollout@*' | awk '{print $1}'"))
}

// TestStatusAPIPeers: the status socket decides by the peer's credentials
// (SO_PEERCRED). A member of group lodis and user lodis read; neither may
// roll out a downgrade or an unsigned release, or hold the remedies; a
// plain user cannot even connect. An admin group's member may roll out,
// but only a release that passes the signature policy in force now, and so
// may root; a request started directly (lodis-rollout@SHA.service, which
// user lodis may start) is checked again by root.
func TestStatusAPIPeers(t *testing.T) {
	// An unsigned release in the store, then a key, then two signed ones:
	// the first of them is the downgrade.
	unsigned := "unsigned"
	runs := upgradeRuns()
	drop(t, unsigned)
	awaitUpgrade(t, runs, 90*time.Second)
	if a := releases(t).Active; a != sha(t, unsigned) {
		t.Fatalf("unsigned drop not rolled out (active %.12s)\n%s", a, journal("lodis-upgrade", 20))
	}
	privPEM, pubPEM, err := release.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	priv, _ := release.ParsePrivateKey(privPEM)
	if err := m.WriteFile(release.DefaultPublicKey, pubPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(host(release.DefaultPublicKey))
	signedDrop := func(name string) string {
		t.Helper()
		sig, err := release.SignFile(bins[name], priv)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(host(incoming+"/app.sig"), sig, 0o644); err != nil {
			t.Fatal(err)
		}
		runs := upgradeRuns()
		drop(t, name)
		awaitUpgrade(t, runs, 90*time.Second)
		if a := releases(t).Active; a != sha(t, name) {
			t.Fatalf("signed drop %s not rolled out (active %.12s)\n%s", name, a, journal("lodis-upgrade", 20))
		}
		return name
	}
	older := signedDrop("signed-a")
	signedDrop("signed-b")
	active := releases(t).Active
	loaded := requested(t)

	for _, who := range []string{"lodis", groupMember} {
		if code, body := api(t, who, "GET", "/v1/instances", ""); code != http.StatusOK {
			t.Errorf("as %s, GET /v1/instances: %d %s", who, code, body)
		}
		for _, s := range []string{sha(t, older), sha(t, unsigned)} {
			if code, body := api(t, who, "POST", "/v1/rollout", `{"sha256":"`+s+`"}`); code != http.StatusForbidden {
				t.Errorf("as %s, POST /v1/rollout %.12s: %d %s, want 403", who, s, code, body)
			}
		}
		if code, body := api(t, who, "POST", "/v1/hold", `{"who":"attack","seconds":600}`); code != http.StatusForbidden {
			t.Errorf("as %s, POST /v1/hold: %d %s, want 403", who, code, body)
		}
	}
	if code, body := api(t, plainUser, "GET", "/v1/instances", ""); code != 0 {
		t.Errorf("a plain user reached the status API: %d %s", code, body)
	}
	// The admin group and root: the policy in force now.
	for _, who := range []string{"lodisadmin", "root"} {
		if code, body := api(t, who, "POST", "/v1/rollout", `{"sha256":"`+sha(t, unsigned)+`"}`); code != http.StatusUnprocessableEntity {
			t.Errorf("as %s, POST /v1/rollout of an unsigned release: %d %s, want 422", who, code, body)
		}
	}
	if err := m.WriteFile("/var/tmp/big-body", []byte(strings.Repeat(" ", 1<<20)), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, body := api(t, "lodisadmin", "POST", "/v1/rollout", "@/var/tmp/big-body"); code/100 != 4 {
		t.Errorf("a 1 MB request body: %d %s, want 4xx", code, body)
	}
	time.Sleep(time.Second)
	if now := requested(t); now != loaded {
		t.Errorf("roll-out units started by refused requests: %q (before: %q)", now, loaded)
	}
	if a := releases(t).Active; a != active {
		t.Fatalf("active release changed to %.12s by refused requests", a)
	}
	// User lodis starting root's unit itself: root checks the request again.
	out, err := systemctlAs("lodis", "start", "lodis-rollout@"+sha(t, unsigned)+".service")
	if err == nil {
		t.Errorf("lodis-rollout@ of an unsigned release succeeded: %s", out)
	}
	if a := releases(t).Active; a != active {
		t.Fatalf("user lodis rolled out the unsigned release: active %.12s", a)
	}
	if log := journal("lodis-rollout@"+sha(t, unsigned), 10); !strings.Contains(log, "unsigned") && !strings.Contains(log, "signature") {
		t.Errorf("root's roll-out unit did not refuse for the signature:\n%s", log)
	}
	sh(t, "systemctl reset-failed 'lodis-rollout@*' || true")
	// An admin's downgrade to a signed release is a rollback: allowed.
	if code, body := api(t, "lodisadmin", "POST", "/v1/rollout", `{"sha256":"`+sha(t, older)+`"}`); code != http.StatusAccepted {
		t.Fatalf("as the admin, POST /v1/rollout of the signed older release: %d %s, want 202", code, body)
	}
	err = waitFor(60*time.Second, func() bool { return releases(t).Active == sha(t, older) })
	if err != nil {
		t.Fatalf("the admin's roll-out did not happen: %v\n%s", err, journal("lodis-rollout@"+sha(t, older), 20))
	}
}

// waitFor polls cond every 100 ms until it is true or timeout passes.
func waitFor(timeout time.Duration, cond func() bool) error {
	end := time.Now().Add(timeout)
	for {
		if cond() {
			return nil
		}
		if time.Now().After(end) {
			return context.DeadlineExceeded
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// slowClient connects to the status socket as user, sends part of a
// request's headers, and prints how many seconds passed until the server
// closed the connection (at most 20).
const slowClient = `
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.sendall(b"GET /v1/instances HTTP/1.1\r\nHost: supervisor\r\n")
s.settimeout(20)
start = time.monotonic()
try:
    while s.recv(4096):
        pass
except socket.timeout:
    pass
print("%.1f" % (time.monotonic() - start))
`

// TestStatusSocketSlowClient: a member of group lodis who sends a
// request's headers and never ends them is cut off by the status API's
// header timeout (5 s), not served forever.
func TestStatusSocketSlowClient(t *testing.T) {
	out, err := as(groupMember, "python3", "-c", slowClient, statusapi.DefaultSocket)
	if err != nil {
		t.Fatalf("slow client: %v: %s", err, out)
	}
	secs, err := strconv.ParseFloat(strings.TrimSpace(out), 64)
	if err != nil {
		t.Fatalf("slow client printed %q", out)
	}
	t.Logf("the status API closed a slow client's connection after %.1f s", secs)
	if secs > 12 {
		t.Errorf("connection held %.1f s, want it closed by the 5 s header timeout", secs)
	}
}
