// Package grafana checks lodis's Grafana dashboard (lodis-dashboard.json):
// it is a dashboard Grafana imports (a uid, panels on the 24-column grid, a
// data source variable every query uses), and each query is PromQL that
// parses (promtool check rules, each query made a recording rule) and reads
// only metrics the supervisor exports.
package grafana

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/lodis/lodis/internal/metrics"
)

type target struct {
	Datasource struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	Expr  string `json:"expr"`
	RefID string `json:"refId"`
}

type panel struct {
	ID      int      `json:"id"`
	Type    string   `json:"type"`
	Title   string   `json:"title"`
	Targets []target `json:"targets"`
	Grid    struct {
		H, W, X, Y int
	} `json:"gridPos"`
}

type dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Annotations struct {
		List []struct {
			Expr string `json:"expr"`
		} `json:"list"`
	} `json:"annotations"`
}

func load(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile("lodis-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("lodis-dashboard.json: %v", err)
	}
	return d
}

// TestDashboardShape: what Grafana needs to import it and lay it out.
func TestDashboardShape(t *testing.T) {
	d := load(t)
	if d.UID == "" || d.Title == "" || d.SchemaVersion < 30 || len(d.Panels) < 20 {
		t.Fatalf("uid %q, title %q, schema %d, %d panels", d.UID, d.Title, d.SchemaVersion, len(d.Panels))
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
	}
	for name, typ := range map[string]string{"datasource": "datasource", "job": "query", "instance": "query", "port": "query"} {
		if vars[name] != typ {
			t.Errorf("variable %s: type %q, want %q", name, vars[name], typ)
		}
	}
	ids := map[int]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		if p.Grid.W < 1 || p.Grid.X < 0 || p.Grid.X+p.Grid.W > 24 || p.Grid.H < 1 {
			t.Errorf("panel %q: gridPos %+v off the 24-column grid", p.Title, p.Grid)
		}
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			if q.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q query %s: data source %q, want ${datasource}", p.Title, q.RefID, q.Datasource.UID)
			}
		}
	}
}

// exprs are every PromQL expression of the dashboard, by where it is.
func exprs(d dashboard) map[string]string {
	out := map[string]string{}
	for _, p := range d.Panels {
		for _, q := range p.Targets {
			out[fmt.Sprintf("panel %q query %s", p.Title, q.RefID)] = q.Expr
		}
	}
	for i, a := range d.Annotations.List {
		out[fmt.Sprintf("annotation %d", i)] = a.Expr
	}
	for _, v := range d.Templating.List {
		if q, ok := v.Query.(map[string]any); ok {
			if s, _ := q["query"].(string); strings.HasPrefix(s, "label_values(") {
				// label_values(SELECTOR, LABEL): the selector is PromQL.
				sel := strings.TrimSuffix(strings.TrimPrefix(s, "label_values("), ")")
				sel = sel[:strings.LastIndex(sel, ",")]
				out["variable "+v.Name] = sel
			}
		}
	}
	return out
}

// grafanaVars replaces Grafana's variables the way Grafana does before a
// query reaches Prometheus.
var grafanaVars = strings.NewReplacer("$__rate_interval", "1m", "$__range", "6h", "$__interval", "15s",
	"$job", "lodis", "$instance", ".*", "$port", ".*")

// TestDashboardQueriesParse: promtool parses every query.
func TestDashboardQueriesParse(t *testing.T) {
	if _, err := exec.LookPath("promtool"); err != nil {
		t.Fatal("promtool not found: run test/deps.sh (Debian: apt-get install prometheus)")
	}
	var b strings.Builder
	b.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	n := 0
	for where, e := range exprs(load(t)) {
		n++
		q, _ := json.Marshal(grafanaVars.Replace(e))
		fmt.Fprintf(&b, "      # %s\n      - record: dashboard:query_%d\n        expr: %s\n", where, n, q)
	}
	f := filepath.Join(t.TempDir(), "dashboard.rules.yml")
	if err := os.WriteFile(f, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("promtool", "check", "rules", f).CombinedOutput()
	if err != nil || !strings.Contains(string(out), fmt.Sprintf("SUCCESS: %d rules found", n)) {
		t.Fatalf("promtool check rules on the dashboard's %d queries: %v\n%s", n, err, out)
	}
}

// TestDashboardReadsExportedMetrics: each metric a query names is one the
// supervisor exports (a histogram by its _bucket, _sum and _count), or up.
func TestDashboardReadsExportedMetrics(t *testing.T) {
	fams, err := metrics.Families()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for where, e := range exprs(load(t)) {
		for _, name := range regexp.MustCompile(`\b(lodis|process)_[a-z_]+`).FindAllString(e, -1) {
			base := name
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				if b, ok := strings.CutSuffix(name, s); ok && fams[b] == "histogram" {
					base = b
				}
			}
			if _, ok := fams[base]; !ok {
				t.Errorf("%s reads %s, which the supervisor does not export", where, name)
			}
			seen[base] = true
		}
	}
	// The dashboard shows what issue 13 asks for.
	for _, want := range []string{"lodis_socket_state", "lodis_worker_state", "lodis_worker_failures_total", "lodis_remedies_total",
		"lodis_health_probe_duration_seconds", "lodis_activation_ready_seconds", "lodis_accept_queue_length", "lodis_app_requests_total",
		"lodis_release_info", "lodis_worker_release_info", "lodis_rollouts_total", "lodis_rollout_duration_seconds", "lodis_rollout_in_progress",
		"lodis_releases_rejected_total", "process_resident_memory_bytes"} {
		if !seen[want] {
			t.Errorf("no panel shows %s", want)
		}
	}
}
