package observability

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lodis/lodis/internal/testenv"
)

// prometheus is a real Prometheus server on the host, scraping the machine's
// lodis-metrics.socket every second, with the packaged alerting rules.
type prometheus struct {
	cmd  *exec.Cmd
	done chan error
	log  string
}

// promConfig is the configuration the test gives Prometheus.
const promConfig = `global:
  scrape_interval: 1s
  scrape_timeout: 900ms
  evaluation_interval: 1s
rule_files:
  - %s
scrape_configs:
  - job_name: lodis
    static_configs:
      - targets: ['%s']
`

func startPrometheus(ctx context.Context, dir string) (*prometheus, error) {
	cfg := filepath.Join(dir, "prometheus.yml")
	rules := filepath.Join(repo, "packaging", "prometheus", "lodis.rules.yml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(promConfig, rules, metricsAddr)), 0o644); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		return nil, err
	}
	p := &prometheus{done: make(chan error, 1), log: logf.Name()}
	p.cmd = exec.Command("prometheus", "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "tsdb"),
		"--web.listen-address="+promAddr, "--log.level=warn")
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start prometheus: %w", err)
	}
	go func() { p.done <- p.cmd.Wait(); logf.Close() }()
	err = testenv.WaitFor(ctx, 60*time.Second, func() (bool, string) {
		up, err := p.query(`up{job="lodis"}`)
		return err == nil && len(up) == 1 && up[0].Value == 1, fmt.Sprintf("up: %v %v", up, err)
	})
	if err != nil {
		b, _ := os.ReadFile(p.log)
		p.stop()
		return nil, fmt.Errorf("prometheus scraping %s: %w\n%s", metricsAddr, err, b)
	}
	return p, nil
}

func (p *prometheus) stop() { stopProcess(p.cmd, p.done) }

// sample is one series of an instant vector.
type sample struct {
	Labels map[string]string
	Value  float64
}

func (s sample) String() string {
	var kv []string
	for k, v := range s.Labels {
		kv = append(kv, k+"="+strconv.Quote(v))
	}
	sort.Strings(kv)
	return fmt.Sprintf("{%s} %g", strings.Join(kv, ","), s.Value)
}

// query runs a PromQL instant query through Prometheus's HTTP API.
func (p *prometheus) query(q string) ([]sample, error) {
	code, body, err := get("http://" + promAddr + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return nil, err
	}
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		return nil, fmt.Errorf("query %s: %d %w: %.200s", q, code, err, body)
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("query %s: %s", q, r.Error)
	}
	var out []sample
	for _, s := range r.Data.Result {
		str, _ := s.Value[1].(string)
		v, err := strconv.ParseFloat(str, 64)
		if err != nil {
			return nil, fmt.Errorf("query %s: value %v", q, s.Value)
		}
		out = append(out, sample{s.Metric, v})
	}
	return out, nil
}

// waitQuery polls q until cond holds for its result, and returns that
// result and how long it took.
func (p *prometheus) waitQuery(t testing.TB, timeout time.Duration, q string, cond func([]sample) bool) ([]sample, time.Duration) {
	t.Helper()
	start := time.Now()
	var got []sample
	var qerr error
	err := testenv.Poll(context.Background(), timeout, 100*time.Millisecond, func() (bool, string) {
		got, qerr = p.query(q)
		return qerr == nil && cond(got), fmt.Sprintf("%s = %v (%v)", q, got, qerr)
	})
	if err != nil {
		t.Fatal(err)
	}
	return got, time.Since(start)
}

// one is a condition: exactly one series, with value v.
func one(v float64) func([]sample) bool {
	return func(s []sample) bool { return len(s) == 1 && s[0].Value == v }
}

// atLeast is a condition: exactly one series, of at least v.
func atLeast(v float64) func([]sample) bool {
	return func(s []sample) bool { return len(s) == 1 && s[0].Value >= v }
}

// value returns the value of q's only series, failing unless there is one.
func (p *prometheus) value(t testing.TB, q string) float64 {
	t.Helper()
	s, err := p.query(q)
	if err != nil || len(s) != 1 {
		t.Fatalf("%s = %v (%v), want one series", q, s, err)
	}
	return s[0].Value
}

// TestPrometheusScrapesLodis: the scrape succeeds and has every port's
// states, the kernel's accept queue of each listening socket, cold starts,
// the supervisor's process metrics and the packaged rules evaluating.
func TestPrometheusScrapesLodis(t *testing.T) {
	q := fmt.Sprintf(`count(lodis_socket_state{state="active",port=~"%d|%d|%d|%d"} == 1)`, port(0), port(1), port(2), port(3))
	prom.waitQuery(t, 20*time.Second, q, one(nPorts))
	for i := range nPorts {
		startWorker(t, port(i))
	}
	prom.waitQuery(t, 20*time.Second, `count(lodis_worker_state{state="active",port=~"189.."} == 1)`, one(nPorts))
	// The kernel's accept queue: the socket listens on every address
	// (ListenStream=PORT), one socket, its backlog the unit's Backlog=4096.
	for i := range nPorts {
		prom.waitQuery(t, 10*time.Second, fmt.Sprintf(`lodis_accept_queue_max{port="%d",listen="[::]:%d"}`, port(i), port(i)), one(4096))
		prom.waitQuery(t, 10*time.Second, fmt.Sprintf(`lodis_accept_queue_length{port="%d",listen="[::]:%d"}`, port(i), port(i)),
			func(s []sample) bool { return len(s) == 1 })
	}
	// Each worker start is a cold start measured from activating to ready.
	s, _ := prom.waitQuery(t, 10*time.Second, `sum(lodis_activation_ready_seconds_count{port=~"189.."})`, atLeast(nPorts))
	mean := prom.value(t, `sum(lodis_activation_ready_seconds_sum{port=~"189.."}) / sum(lodis_activation_ready_seconds_count{port=~"189.."})`)
	t.Logf("%g cold starts recorded, mean activation to ready %.1f ms", s[0].Value, mean*1000)
	if mean <= 0 || mean > 10 {
		t.Errorf("mean activation to ready %g s: want a positive time of seconds at most", mean)
	}
	// Requests the app reports (lodis serve does) are counted.
	prom.waitQuery(t, 10*time.Second, fmt.Sprintf(`lodis_app_requests_total{port="%d"}`, port(0)), atLeast(1))
	// The supervisor's own process.
	rss := prom.value(t, `process_resident_memory_bytes{job="lodis"}`)
	t.Logf("supervisor RSS %.1f MB", rss/1e6)
	if rss < 1e6 || rss > 500e6 {
		t.Errorf("supervisor RSS %g bytes", rss)
	}
	prom.waitQuery(t, 10*time.Second, `lodis_bus_connected`, one(1))
	// The packaged rules load and evaluate against real data.
	checkRules(t)
}

// checkRules: every packaged rule is loaded and its last evaluation is ok.
func checkRules(t *testing.T) {
	t.Helper()
	var r struct {
		Data struct {
			Groups []struct {
				Name  string `json:"name"`
				Rules []struct {
					Name      string `json:"name"`
					Health    string `json:"health"`
					LastError string `json:"lastError"`
				} `json:"rules"`
			} `json:"groups"`
		} `json:"data"`
	}
	err := testenv.WaitFor(context.Background(), 10*time.Second, func() (bool, string) {
		_, body, err := get("http://" + promAddr + "/api/v1/rules")
		if err != nil || json.Unmarshal([]byte(body), &r) != nil {
			return false, fmt.Sprint(err)
		}
		n, bad := 0, []string{}
		for _, g := range r.Data.Groups {
			for _, rule := range g.Rules {
				n++
				if rule.Health != "ok" {
					bad = append(bad, rule.Name+": "+rule.Health+" "+rule.LastError)
				}
			}
		}
		return n >= 5 && len(bad) == 0, fmt.Sprintf("%d rules, not ok: %q", n, bad)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestPrometheusSeesAKill: a worker killed with SIGKILL shows in Prometheus
// as a worker failure and a reset-failed remedy of its port, and the port
// has a new cold start; the other ports' counters do not move.
func TestPrometheusSeesAKill(t *testing.T) {
	victim := port(1)
	pid := startWorker(t, victim)
	failures := fmt.Sprintf(`lodis_worker_failures_total{port="%d"}`, victim)
	resets := fmt.Sprintf(`lodis_remedies_total{port="%d",kind="reset-failed",result="done"}`, victim)
	starts := fmt.Sprintf(`lodis_activation_ready_seconds_count{port="%d"}`, victim)
	f0, r0, s0 := prom.value(t, failures), prom.value(t, resets), prom.value(t, starts)
	others := fmt.Sprintf(`sum(lodis_worker_failures_total{port=~"189..",port!="%d"})`, victim)
	o0 := prom.value(t, others)

	killed := time.Now()
	kill9(t, pid)
	prom.waitQuery(t, 30*time.Second, failures, one(f0+1))
	tookFail := within(killed)
	prom.waitQuery(t, 30*time.Second, resets, one(r0+1))
	tookReset := within(killed)
	prom.waitQuery(t, 10*time.Second, fmt.Sprintf(`lodis_worker_state{port="%d",state="active"}`, victim), one(0))
	t.Logf("after the kill -9, Prometheus (scraping every 1 s) had the failure %v later, the reset-failed remedy %v later", tookFail, tookReset)
	// increase() over the kill, as an alert or a dashboard computes it.
	prom.waitQuery(t, 10*time.Second, fmt.Sprintf(`increase(%s[2m]) > 0`, failures), func(s []sample) bool { return len(s) == 1 })
	// The next connection starts a fresh worker: one more cold start.
	startWorker(t, victim)
	prom.waitQuery(t, 20*time.Second, starts, atLeast(s0+1))
	if o := prom.value(t, others); o != o0 {
		t.Errorf("other ports' failures went from %g to %g", o0, o)
	}
}

// TestPrometheusSeesARollout: a new build dropped is rolled out; Prometheus
// sees the roll-out under way, then done once, with its duration, the new
// release active (its version from validation) and the old one previous,
// every running worker on the new release; a bad drop is one rejection.
func TestPrometheusSeesARollout(t *testing.T) {
	for i := range nPorts {
		startWorker(t, port(i))
	}
	old, next := installedSHA(t), fileSHA(t, v2)
	done0 := prom.value(t, `lodis_rollouts_total{kind="upgrade",outcome="done"}`)
	b, err := os.ReadFile(v2)
	if err != nil {
		t.Fatal(err)
	}
	dropped := time.Now()
	drop(t, b, "lodis")
	err = testenv.WaitFor(context.Background(), 2*time.Minute, func() (bool, string) {
		st := persisted(t)
		return st != nil && st.To == next && st.Phase.Finished(), fmt.Sprintf("roll-out %+v", st)
	})
	if err != nil {
		t.Fatal(err)
	}
	if st := persisted(t); st.Phase != "done" {
		t.Fatalf("roll-out %s: %s (%s)", st.ID, st.Phase, st.Reason)
	}
	_, took := prom.waitQuery(t, 20*time.Second, `lodis_rollouts_total{kind="upgrade",outcome="done"}`, one(done0+1))
	t.Logf("roll-out done %v after the drop; Prometheus had it %v later", within(dropped)-took.Round(10*time.Millisecond), took.Round(10*time.Millisecond))
	prom.waitQuery(t, 10*time.Second, `lodis_rollout_duration_seconds_count{kind="upgrade",outcome="done"}`, one(done0+1))
	dur := prom.value(t, `lodis_rollout_duration_seconds_sum{kind="upgrade",outcome="done"}`)
	if dur < 2 || dur > 120 {
		t.Errorf("roll-out duration %g s: want at least the 2 s canary soak, at most 2 min", dur)
	}
	prom.waitQuery(t, 10*time.Second, `lodis_rollout_in_progress`, one(0))
	prom.waitQuery(t, 10*time.Second, `max_over_time(lodis_rollout_in_progress[5m])`, one(1))
	prom.waitQuery(t, 10*time.Second, fmt.Sprintf(`lodis_release_info{state="active",sha256="%s",version="obs-v2"}`, next), one(1))
	prom.waitQuery(t, 10*time.Second, fmt.Sprintf(`lodis_release_info{state="previous",sha256="%s"}`, old), one(1))
	prom.waitQuery(t, 10*time.Second, `count(lodis_release_info)`, one(2))
	prom.waitQuery(t, 20*time.Second, fmt.Sprintf(`count(lodis_worker_release_info{port=~"189..",sha256="%s"})`, next), one(nPorts))
	prom.waitQuery(t, 10*time.Second, fmt.Sprintf(`count(lodis_worker_release_info{port=~"189..",sha256!="%s"})`, next),
		func(s []sample) bool { return len(s) == 0 })

	// A drop that is no program: rejected at validation, counted once.
	rej0 := prom.value(t, `lodis_releases_rejected_total{stage="validation"}`)
	drop(t, []byte("this is not a program\n"), "junk")
	prom.waitQuery(t, 60*time.Second, `lodis_releases_rejected_total{stage="validation"}`, one(rej0+1))
	prom.waitQuery(t, 10*time.Second, `increase(lodis_releases_rejected_total{stage="validation"}[2m]) > 0`, func(s []sample) bool { return len(s) == 1 })
}
