package statuspage

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/lodis/lodis/internal/events"
	"github.com/lodis/lodis/internal/rollout"
	"github.com/lodis/lodis/internal/statusapi"
)

const (
	shaOld = "aaaaaaaaaaaa1111111111111111111111111111111111111111111111111111"
	shaNew = "bbbbbbbbbbbb2222222222222222222222222222222222222222222222222222"
)

func snapshot() statusapi.Snapshot {
	now := time.Now()
	return statusapi.Snapshot{Connected: true, Bus: "/run/dbus/system_bus_socket", Since: now.Add(-90 * time.Second), PID: 77, Version: "v1.2.0",
		Instances: []statusapi.InstanceStatus{
			{Port: "8080", Socket: "active/running", Worker: "active/running", PID: 101, Version: "v2", SHA256: shaNew, UptimeSeconds: 12,
				Health: &statusapi.ProbeStatus{OK: true, At: now, LatencyMS: 1.25}},
			{Port: "8081", Socket: "active/listening", Worker: "inactive/dead", Restarts: 2,
				Health: &statusapi.ProbeStatus{OK: true, At: now.Add(-time.Minute), LatencyMS: 3}}, // of the worker that exited
			{Port: "8082", Socket: "active/listening", Worker: "failed/failed", WorkerResult: "signal", Restarts: 1},
			{Port: "8083", Socket: "failed/failed", SocketResult: "trigger-limit-hit", Worker: "inactive/dead"},
			{Port: "8084", Socket: "active/running", Worker: "active/running", PID: 104, SHA256: shaOld,
				Health: &statusapi.ProbeStatus{OK: false, Error: "health probe: 503", Failures: 2}},
		}}
}

// render serves the page once and returns its status and body.
func render(t *testing.T, p *Page) (*http.Response, string) {
	t.Helper()
	srv := httptest.NewServer(p)
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// row is the table row of port.
func row(t *testing.T, body, port string) string {
	t.Helper()
	m := regexp.MustCompile(`(?s)<tr class="(\w+)" data-port="` + port + `">.*?</tr>`).FindString(body)
	if m == "" {
		t.Fatalf("no row for port %s in:\n%s", port, body)
	}
	return m
}

// TestPageShowsEveryPort: each port has a row with its units' states, its
// worker's pid and release, its health and restarts, coloured by how it
// fares; the page refreshes itself and needs nothing from elsewhere.
func TestPageShowsEveryPort(t *testing.T) {
	ev := events.New(100, nil)
	for i := range 40 {
		ev.Emit(events.Event{Kind: events.KindState, Instance: "8082", From: "active/running", To: "failed/failed", Result: "signal",
			Message: "worker killed " + string(rune('a'+i%26))})
	}
	p := &Page{Status: func(context.Context) (statusapi.Snapshot, bool) { return snapshot(), true }, Events: ev, Host: "web1", Refresh: 3 * time.Second}
	resp, body := render(t, p)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("status %d, type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, want := range []string{`<meta http-equiv="refresh" content="3">`, "<title>lodis on web1</title>", "Ports (5)", "supervisor v1.2.0", "pid 77", "connected to systemd"} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	for port, want := range map[string][]string{
		"8080": {`class="ok"`, "active/running", "101", "v2 <code>bbbbbbbbbbbb</code>", "healthy", "1.2 ms", "12s"},
		"8081": {`class="idle"`, "inactive/dead", "no worker", ">2<"},
		"8082": {`class="bad"`, "failed/failed", "(signal)", "worker failed"},
		"8083": {`class="bad"`, "(trigger-limit-hit)", "refuses connections"},
		"8084": {`class="bad"`, "<code>aaaaaaaaaaaa</code>", "failing", "2 in a row", "health probe: 503"},
	} {
		r := row(t, body, port)
		for _, w := range want {
			if !strings.Contains(r, w) {
				t.Errorf("row of %s lacks %q:\n%s", port, w, r)
			}
		}
	}
	if r := row(t, body, "8081"); strings.Contains(r, "healthy") {
		t.Errorf("a port without a worker shows the last worker's health: %s", r)
	}
	if n := strings.Count(body, "worker killed"); n != DefaultEvents {
		t.Errorf("%d events shown, want the last %d", n, DefaultEvents)
	}
	if i, j := strings.Index(body, "worker killed n"), strings.Index(body, "worker killed m"); i < 0 || j < 0 || i > j {
		t.Error("events are not newest first")
	}
	// Nothing from elsewhere: no script, no link, no image, no source.
	if m := regexp.MustCompile(`(?i)<script|<link|<img|<iframe|\ssrc=|\shref=|url\(`).FindString(body); m != "" {
		t.Errorf("the page refers to something outside itself: %q", m)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("Content-Security-Policy %q", csp)
	}
	if resp.Header.Get("Cache-Control") != "no-store" {
		t.Error("the page may be cached")
	}
}

// TestPageShowsTheRollout: the roll-out under way, its phase, progress and
// steps newest first.
func TestPageShowsTheRollout(t *testing.T) {
	st := rollout.NewState(rollout.KindUpgrade, shaOld, shaNew, time.Now().Add(-10*time.Second))
	st.Phase, st.ToVersion, st.Units, st.Moved, st.Current = rollout.PhaseRolling, "v2", []string{"lodis@8080.service", "lodis@8081.service"},
		[]string{"lodis@8080.service"}, "lodis@8081.service"
	for _, k := range []string{"started", "flipped", "restarting", "canary-passed", "restarting"} {
		st.Events = append(st.Events, rollout.Event{Time: time.Now(), Kind: k, Unit: "lodis@8081.service", Message: "step " + k})
	}
	p := &Page{Status: func(context.Context) (statusapi.Snapshot, bool) { return snapshot(), true },
		Rollout: func() (*rollout.State, error) { return st, nil }}
	_, body := render(t, p)
	for _, want := range []string{"in progress", st.ID, "upgrade from <code>aaaaaaaaaaaa</code> to v2 <code>bbbbbbbbbbbb</code>", "rolling", "1 of 2 workers moved", "now <code>lodis@8081.service</code>", `id="steps"`} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if i, j := strings.Index(body, "step canary-passed"), strings.Index(body, "step flipped"); i < 0 || j < 0 || i > j {
		t.Error("steps are not newest first")
	}

	st.Phase, st.Reason, st.Finished = rollout.PhaseRolledBack, "canary lodis@8080.service answered 503", time.Now()
	_, body = render(t, p)
	if strings.Contains(body, "in progress") || !strings.Contains(body, "Last roll-out") || !strings.Contains(body, "canary lodis@8080.service answered 503") {
		t.Errorf("a roll-out that rolled back:\n%s", body)
	}
}

// TestPageEscapes: what a worker or a unit can put in a message is shown as
// text, never as markup.
func TestPageEscapes(t *testing.T) {
	ev := events.New(10, nil)
	ev.Emit(events.Event{Kind: events.KindProbe, Instance: "8080", Result: "failed", Message: `answered <script>alert(1)</script><b onmouseover="x">`})
	snap := snapshot()
	snap.Instances[4].Health.Error = `<img src=x onerror=alert(2)>`
	p := &Page{Status: func(context.Context) (statusapi.Snapshot, bool) { return snap, true }, Events: ev}
	_, body := render(t, p)
	for _, bad := range []string{"<script>", "<img src", "<b onmouseover"} {
		if strings.Contains(body, bad) {
			t.Errorf("page has %q unescaped", bad)
		}
	}
	if !strings.Contains(body, "&lt;script&gt;alert(1)&lt;/script&gt;") {
		t.Error("the message is not shown escaped")
	}
}

// TestPageWhenTheSupervisorDoesNotAnswer: 503, saying so, still refreshing.
func TestPageWhenTheSupervisorDoesNotAnswer(t *testing.T) {
	p := &Page{Status: func(context.Context) (statusapi.Snapshot, bool) { return statusapi.Snapshot{}, false }}
	resp, body := render(t, p)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "does not answer") || !strings.Contains(body, `http-equiv="refresh"`) {
		t.Errorf("%d:\n%s", resp.StatusCode, body)
	}
}

func TestAgo(t *testing.T) {
	for d, want := range map[time.Duration]string{-time.Second: "0s", 850 * time.Millisecond: "850ms", 12 * time.Second: "12s",
		200 * time.Second: "3m20s", 2*time.Hour + 5*time.Minute + 10*time.Second: "2h5m"} {
		if got := ago(d); got != want {
			t.Errorf("ago(%v) = %q, want %q", d, got, want)
		}
	}
}
