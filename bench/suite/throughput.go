package suite

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/lodis/lodis/bench/plot"
	"github.com/lodis/lodis/bench/report"
	"github.com/lodis/lodis/internal/load"
)

// Load shapes of the throughput stage.
const (
	maxConns  = 32   // closed-loop connections
	fixedRate = 3000 // requests/s of the fixed-rate run, well below every server's peak
	rateConns = 32
)

// server is one HTTP server under load.
type server struct {
	name string
	url  string
	port int
	path string
}

// throughputStage loads socket-activated lodis, bare net/http, nginx and
// lodis with an unhardened unit, all in the machine, with the same load
// generator: closed-loop peak throughput (rounds interleaved, the median
// counts), then one fixed-rate run each.
func throughputStage(ctx context.Context, e *env) ([]report.Table, error) {
	u, err := e.readUnit()
	if err != nil {
		return nil, err
	}
	if err := e.writeUnits(ctx, map[string]string{instanceUnit(portTPPlain): u.variant([]option{})}); err != nil {
		return nil, err
	}
	if err := e.enable(ctx, portTPLodis, portTPPlain); err != nil {
		return nil, err
	}
	defer e.disable(context.WithoutCancel(ctx), portTPLodis, portTPPlain)
	if err := e.transient(ctx, "lodis-bench-hello", nil, helloPath, "--listen", fmt.Sprintf("127.0.0.1:%d", portTPBare)); err != nil {
		return nil, fmt.Errorf("bare net/http: %w", err)
	}
	defer e.m.Systemctl(context.WithoutCancel(ctx), "stop", "lodis-bench-hello.service")
	if err := waitServing(ctx, portTPBare, "/", 10*time.Second); err != nil {
		return nil, fmt.Errorf("bare net/http: %w; its journal:\n%s", err, e.journal(ctx, "lodis-bench-hello.service"))
	}
	ng, err := e.startNginx(ctx, "hello", nginxHello([]int{portTPNginx}), portTPNginx)
	defer ng.stop(context.WithoutCancel(ctx), e)
	if err != nil {
		return nil, err
	}
	servers := []server{
		{name: "lodis", port: portTPLodis, path: "/__/time"},
		{name: "net/http", port: portTPBare, path: "/"},
		{name: "nginx", port: portTPNginx, path: "/"},
		{name: "lodis, unhardened unit", port: portTPPlain, path: "/__/time"},
	}
	for i := range servers {
		servers[i].url = fmt.Sprintf("http://127.0.0.1:%d%s", servers[i].port, servers[i].path)
	}

	peak := make([][]float64, len(servers))
	failed := make([]int, len(servers))
	for range e.plan.rounds {
		for i, s := range servers {
			// A socket-activated worker exits after 30 s idle: start it
			// before the run, outside the measured time.
			if err := waitServing(ctx, s.port, s.path, 10*time.Second); err != nil {
				return nil, err
			}
			r, err := load.Max(ctx, load.Options{Targets: []string{s.url}, Duration: e.plan.maxDuration, Conns: maxConns})
			if err != nil {
				return nil, fmt.Errorf("%s peak: %w", s.name, err)
			}
			peak[i] = append(peak[i], r.Throughput)
			failed[i] += r.Failed
		}
	}
	// The fixed-rate runs are interleaved too: a burst of other work on the
	// machine then falls on every server alike, not on one server's only run.
	fixed := make([]*fixedRuns, len(servers))
	for i, s := range servers {
		fixed[i] = &fixedRuns{name: s.name}
	}
	for range e.plan.rounds {
		for i, s := range servers {
			if err := waitServing(ctx, s.port, s.path, 10*time.Second); err != nil {
				return nil, err
			}
			r, err := load.Run(ctx, load.Options{Targets: []string{s.url}, Rate: fixedRate, Duration: e.plan.rateDuration, Conns: rateConns})
			if err != nil {
				return nil, fmt.Errorf("%s fixed rate: %w", s.name, err)
			}
			fixed[i].add(r)
			failed[i] += r.Failed
		}
	}

	t := report.Table{Title: titleThroughput, Ratios: true}
	for _, s := range servers[1:] {
		t.Peers = append(t.Peers, s.name)
	}
	row := func(metric, unit string, g report.Goal, f func(i int) float64) {
		r := report.Row{Metric: metric, Unit: unit, Goal: g, Value: f(0)}
		for i := range servers[1:] {
			r.Peers = append(r.Peers, f(i+1))
		}
		t.Rows = append(t.Rows, r)
	}
	row(fmt.Sprintf("peak throughput (median of %d runs)", e.plan.rounds), "requests/s",
		report.Goal{Op: report.AtLeast, Value: 0.95, Of: "net/http"}, func(i int) float64 { return median(peak[i]) })
	for _, p := range []struct {
		name string
		q    float64
	}{{"p50", 50}, {"p90", 90}, {"p99", 99}} {
		row(fmt.Sprintf("latency %s at %d requests/s", p.name, fixedRate), "ms",
			report.Goal{Op: report.AtMost, Value: 1.25, Of: "net/http"}, func(i int) float64 { return ms(fixed[i].pct(p.q)) })
	}
	row("failed requests, all runs", "", report.Goal{Op: report.AtMost, Value: 0}, func(i int) float64 { return float64(failed[i]) })
	var spread []string
	for i, s := range servers {
		spread = append(spread, fmt.Sprintf("%s %.0f–%.0f", s.name, slices.Min(peak[i]), slices.Max(peak[i])))
	}
	t.Note = fmt.Sprintf(`All four servers run in the machine, under systemd; the load generator (package internal/load, on the host, %d keep-alive connections) shares the same 2 cores, so every server is measured with the same handicap. lodis: socket-activated `+"`lodis serve`"+`, installed unit, `+"`GET /__/time`"+`. net/http: bench/hello, a bare `+"`http.Server`"+` answering "hello" (a transient service). nginx: nginx-light, `+"`return 200`"+`, worker_processes auto, access log off (a transient service, `+"`nginx -c FILE -g 'daemon off;'`"+`). lodis, unhardened unit: the same worker with the sandboxing settings removed (see table 1), to show what they cost under load. Peak: closed loop for %s per run, the servers' runs interleaved, %d rounds; median shown; the runs ranged over %s requests/s, so differences within those ranges are noise. Latency: open loop at a fixed %d requests/s, from each request's due time (no coordinated omission), %d runs of %s per server interleaved like the peak runs, percentiles over all their requests; the plot puts a server's runs end to end. Goals: throughput ≥ 0.95 × net/http is the project's; the latency goal (≤ 1.25 × net/http) is set here.`,
		maxConns, e.plan.maxDuration, e.plan.rounds, strings.Join(spread, ", "), fixedRate, e.plan.rounds, e.plan.rateDuration)

	var series []plot.Series
	for _, f := range fixed {
		series = append(series, f.series())
	}
	plots, err := e.savePlots("throughput", fmt.Sprintf("Fixed rate, %d requests/s", fixedRate), series, nil)
	if err != nil {
		return nil, err
	}
	t.Plots = plots
	return []report.Table{t}, nil
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// savePlots writes NAME-latency.svg and NAME-failures.svg in the output
// directory and returns them as report plots.
func (e *env) savePlots(name, title string, series []plot.Series, marks []plot.Mark) ([]report.Plot, error) {
	c := plot.Chart{Title: title, Series: series, Marks: marks}
	lat, err := plot.Latency(c)
	if err != nil {
		return nil, err
	}
	fail, err := plot.Failures(c)
	if err != nil {
		return nil, err
	}
	var out []report.Plot
	for _, p := range []struct {
		file, alt string
		save      func(string) error
	}{
		{name + "-latency.svg", title + ": latency p50 and p99 per 100 ms", func(f string) error { return plot.Save(lat, f) }},
		{name + "-failures.svg", title + ": failed requests per second", func(f string) error { return plot.Save(fail, f) }},
	} {
		if err := p.save(filepath.Join(e.out, p.file)); err != nil {
			return nil, err
		}
		out = append(out, report.Plot{Alt: p.alt, Path: p.file})
	}
	return out, nil
}

// fixedRuns are one server's fixed-rate runs.
type fixedRuns struct {
	name string
	runs []*load.Result
	all  *hdrhistogram.Histogram // every OK request's latency, µs
}

func (f *fixedRuns) add(r *load.Result) {
	f.runs = append(f.runs, r)
	if f.all == nil {
		f.all = hdrhistogram.New(r.Latency.LowestTrackableValue(), r.Latency.HighestTrackableValue(), int(r.Latency.SignificantFigures()))
	}
	f.all.Merge(r.Latency)
}

// pct is the latency at percentile q (0–100) over every run.
func (f *fixedRuns) pct(q float64) time.Duration {
	return time.Duration(f.all.ValueAtQuantile(q)) * time.Microsecond
}

// series puts the runs' timelines end to end.
func (f *fixedRuns) series() plot.Series {
	s := plot.Series{Name: f.name}
	var offset time.Duration
	for _, r := range f.runs {
		s.Interval = r.Interval
		for _, b := range r.Timeline {
			b.Start += offset
			s.Timeline = append(s.Timeline, b)
		}
		offset += time.Duration(len(r.Timeline)) * r.Interval
	}
	return s
}
