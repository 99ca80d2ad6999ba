package metrics

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/lodis/lodis/internal/events"
)

// series are the sample lines of the exposition whose name starts with
// prefix (comments left out).
func series(text, prefix string) []string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return out
}

func wantLines(t *testing.T, text string, lines ...string) {
	t.Helper()
	have := strings.Split(text, "\n")
	for _, l := range lines {
		if !slices.Contains(have, l) {
			t.Errorf("exposition lacks %q", l)
		}
	}
}

// TestExposition: a state as the supervisor reports it (two ports, a crash
// and its remedy, probes, a cold start, the kernel's counts, releases,
// a roll-out) gives these series, with these labels and values.
func TestExposition(t *testing.T) {
	m := New()
	for _, p := range []string{"8080", "8081"} {
		m.WatchPort(p)
	}
	m.SetUnitStates("8080", "active", "active")
	m.SetUnitStates("8081", "active", "failed")
	m.CountWorkerFailure("8081")
	m.CountRemedy("8081", "reset-failed", "done")
	m.SetWorkerRelease("8080", true, "aa11", "v1")
	m.ObserveProbe("8080", "ok", 0.002)
	m.ObserveProbe("8080", "ok", 0.003)
	m.ObserveProbe("8080", "failed", 2)
	m.ObserveActivation("8080", 0.04)
	m.AddAppRequests("8080", 7)
	m.AddAppRequests("8080", 3)
	m.SetConns("8080", 4, []Listener{{Addr: "127.0.0.1:8080", Queue: 2, Backlog: 4096}, {Addr: "[::1]:8080", Queue: 0, Backlog: 4096}})
	m.SetReleases([]Release{{SHA256: "bb22", Version: "v2", State: "active"}, {SHA256: "aa11", Version: "v1", State: "previous"}})
	m.CountRejections("validation", 2)
	m.CountRollout("upgrade", "done", 12.5)
	m.SetRolloutInProgress(true)
	m.CountEvent(events.Event{Kind: events.KindState})
	m.CountHook("ok")
	m.SetBusConnected(true)

	text := m.Text()
	wantLines(t, text,
		`lodis_socket_state{port="8080",state="active"} 1`,
		`lodis_socket_state{port="8080",state="failed"} 0`,
		`lodis_worker_state{port="8081",state="failed"} 1`,
		`lodis_worker_state{port="8081",state="active"} 0`,
		`lodis_worker_state{port="8081",state="deactivating"} 0`,
		`lodis_worker_failures_total{port="8080"} 0`,
		`lodis_worker_failures_total{port="8081"} 1`,
		`lodis_worker_release_info{port="8080",sha256="aa11",version="v1"} 1`,
		`lodis_remedies_total{kind="reset-failed",port="8081",result="done"} 1`,
		`lodis_remedies_total{kind="restart",port="8080",result="failed"} 0`,
		`lodis_health_probe_duration_seconds_count{port="8080",result="ok"} 2`,
		`lodis_health_probe_duration_seconds_bucket{port="8080",result="ok",le="0.0025"} 1`,
		`lodis_health_probe_duration_seconds_count{port="8080",result="failed"} 1`,
		`lodis_activation_ready_seconds_bucket{port="8080",le="0.05"} 1`,
		`lodis_activation_ready_seconds_bucket{port="8080",le="0.025"} 0`,
		`lodis_activation_ready_seconds_sum{port="8080"} 0.04`,
		`lodis_app_requests_total{port="8080"} 10`,
		`lodis_connections{port="8080"} 4`,
		`lodis_accept_queue_length{listen="127.0.0.1:8080",port="8080"} 2`,
		`lodis_accept_queue_length{listen="[::1]:8080",port="8080"} 0`,
		`lodis_accept_queue_max{listen="127.0.0.1:8080",port="8080"} 4096`,
		`lodis_release_info{sha256="bb22",state="active",version="v2"} 1`,
		`lodis_release_info{sha256="aa11",state="previous",version="v1"} 1`,
		`lodis_releases_rejected_total{stage="validation"} 2`,
		`lodis_releases_rejected_total{stage="rollout"} 0`,
		`lodis_rollouts_total{kind="upgrade",outcome="done"} 1`,
		`lodis_rollouts_total{kind="rollback",outcome="rolled-back"} 0`,
		`lodis_rollout_duration_seconds_sum{kind="upgrade",outcome="done"} 12.5`,
		`lodis_rollout_in_progress 1`,
		`lodis_events_total{kind="state"} 1`,
		`lodis_hook_runs_total{outcome="ok"} 1`,
		`lodis_bus_connected 1`,
		"# TYPE lodis_activation_ready_seconds histogram",
		"# TYPE lodis_worker_failures_total counter",
		"# TYPE lodis_socket_state gauge",
	)
	if s := series(text, "process_resident_memory_bytes"); len(s) != 1 {
		t.Errorf("process metrics: %q", s)
	}
	if s := series(text, "lodis_app_requests_total{port=\"8081\""); len(s) != 0 {
		t.Errorf("a port whose app reported no requests has a requests series: %q", s)
	}
}

// TestStaleSeriesGo: what changes removes the series that no longer hold
// — a listening socket gone, a worker gone or on another release, a port
// no longer watched, releases replaced — and leaves the other ports'.
func TestStaleSeriesGo(t *testing.T) {
	m := New()
	for _, p := range []string{"8080", "8081"} {
		m.WatchPort(p)
		m.SetUnitStates(p, "active", "active")
		m.ObserveProbe(p, "ok", 0.001)
		m.ObserveActivation(p, 0.1)
		m.AddAppRequests(p, 1)
		m.SetWorkerRelease(p, true, "aa11", "v1")
		m.SetConns(p, 0, []Listener{{Addr: "127.0.0.1:" + p}, {Addr: "[::1]:" + p}})
	}
	m.SetConns("8080", 0, []Listener{{Addr: "[::1]:8080"}})
	m.SetWorkerRelease("8080", true, "bb22", "v2")
	m.SetWorkerRelease("8081", false, "", "")
	m.SetReleases([]Release{{SHA256: "aa11", State: "active"}})
	m.SetReleases([]Release{{SHA256: "bb22", State: "active"}})
	text := m.Text()
	if s := series(text, `lodis_accept_queue_length{listen="127.0.0.1:8080"`); len(s) != 0 {
		t.Errorf("a listening socket that is gone still has %q", s)
	}
	if s := series(text, `lodis_accept_queue_length{listen="[::1]:8080"`); len(s) != 1 {
		t.Errorf("the remaining listening socket: %q", s)
	}
	if s := series(text, "lodis_worker_release_info"); len(s) != 1 || !strings.Contains(s[0], `port="8080",sha256="bb22"`) {
		t.Errorf("worker releases: %q, want 8080 on bb22 alone", s)
	}
	if s := series(text, "lodis_release_info"); len(s) != 1 || !strings.Contains(s[0], "bb22") {
		t.Errorf("releases: %q, want bb22 alone", s)
	}

	m.ForgetPort("8080")
	text = m.Text()
	if s := regexp.MustCompile(`(?m)^lodis_\w+\{[^}]*port="8080".*$`).FindAllString(text, -1); len(s) != 0 {
		t.Errorf("port 8080 is no longer watched, yet: %q", s)
	}
	for _, name := range []string{"lodis_socket_state", "lodis_worker_failures_total", "lodis_remedies_total", "lodis_health_probe_duration_seconds_count",
		"lodis_activation_ready_seconds_count", "lodis_app_requests_total", "lodis_accept_queue_length"} {
		if s := series(text, name+"{"); !slices.ContainsFunc(s, func(l string) bool { return strings.Contains(l, `port="8081"`) }) {
			t.Errorf("port 8081 lost %s: %q", name, s)
		}
	}
	// Watched again, it starts afresh.
	m.WatchPort("8080")
	wantLines(t, m.Text(), `lodis_worker_failures_total{port="8080"} 0`)
}

// TestDocumented: docs/metrics.md names every metric the registry has, with
// its type, and no lodis_ metric the registry lacks.
func TestDocumented(t *testing.T) {
	b, err := os.ReadFile("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	fams, err := Families()
	if err != nil {
		t.Fatal(err)
	}
	if len(fams) < 20 {
		t.Fatalf("only %d families: %v", len(fams), fams)
	}
	for name, typ := range fams {
		if strings.HasPrefix(name, "process_") {
			if !strings.Contains(doc, "`"+name+"`") {
				t.Errorf("docs/metrics.md does not name %s", name)
			}
			continue
		}
		if !regexp.MustCompile("(?m)^\\| `" + regexp.QuoteMeta(name) + "(\\{[^`]*\\})?` \\| " + typ + " \\|").MatchString(doc) {
			t.Errorf("docs/metrics.md has no table row | `%s{…}` | %s | …", name, typ)
		}
	}
	for _, row := range regexp.MustCompile("(?m)^\\| `(lodis_\\w+)").FindAllStringSubmatch(doc, -1) {
		if _, ok := fams[row[1]]; !ok {
			t.Errorf("docs/metrics.md documents %s, which the supervisor does not export", row[1])
		}
	}
}
