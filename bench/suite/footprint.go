package suite

import (
	"context"
	"fmt"
	"time"

	"github.com/lodis/lodis/bench/report"
)

// footprint is what a set of ports costs while idle.
type footprint struct {
	procs int
	rss   uint64
}

// footprintStage enables 10 lodis ports and counts the worker processes and
// their memory while nobody connects, then keeps a worker running on each
// (a drop-in sets --idle-timeout 0) and counts again; nginx serving 10 ports
// is the third column.
func footprintStage(ctx context.Context, e *env) ([]report.Table, error) {
	ports := portRange(portFootprint, cohort)
	files := map[string]string{}
	for _, p := range ports {
		files[dropIn(p, "always-on")] = execStart("--idle-timeout 0")
	}
	if err := e.writeUnits(ctx, files); err != nil {
		return nil, err
	}
	if err := e.enable(ctx, ports...); err != nil {
		return nil, err
	}
	defer e.disable(context.WithoutCancel(ctx), ports...)
	// Let the sockets settle, as a host would be a while after boot.
	time.Sleep(time.Second)
	idle, err := e.workersFootprint(ctx, ports)
	if err != nil {
		return nil, err
	}
	for _, p := range ports {
		if err := waitServing(ctx, p, "/__/time", 10*time.Second); err != nil {
			return nil, err
		}
	}
	time.Sleep(time.Second)
	on, err := e.workersFootprint(ctx, ports)
	if err != nil {
		return nil, err
	}
	if on.procs != cohort {
		return nil, fmt.Errorf("%d workers running after a request to each of %d ports", on.procs, cohort)
	}
	ng, err := e.startNginx(ctx, "footprint", nginxHello(portRange(portFootprintNginx, cohort)), portFootprintNginx)
	defer ng.stop(context.WithoutCancel(ctx), e)
	if err != nil {
		return nil, err
	}
	time.Sleep(time.Second)
	pids, err := ng.processes(ctx, e)
	if err != nil {
		return nil, err
	}
	nrss, err := e.rss(ctx, pids)
	if err != nil {
		return nil, err
	}
	t := report.Table{
		Title:   titleFootprint,
		Subject: "lodis, 10 ports idle",
		Peers:   []string{"lodis, 10 always-on workers", "nginx, 10 ports"},
		Rows: []report.Row{
			{Metric: "processes", Goal: report.Goal{Op: report.AtMost, Value: 0}, Value: float64(idle.procs),
				Peers: []float64{float64(on.procs), float64(len(pids))}},
			{Metric: "resident memory", Unit: "MiB", Goal: report.Goal{Op: report.AtMost, Value: 0}, Value: mib(idle.rss),
				Peers: []float64{mib(on.rss), mib(nrss)}, Digits: 1},
		},
		Note: "Processes in the workers' control groups (`lodis@P.service`) and their summed VmRSS, 1 s after enabling 10 sockets with nobody connecting; then after one request to each port, with a drop-in keeping each worker running (`--idle-timeout 0`); nginx: master and workers serving `return 200` on 10 ports. The sockets themselves are held by systemd (PID 1) and cost no process. Goal from the brief: 0 workers while idle.",
	}
	return []report.Table{t}, nil
}

// workersFootprint counts the processes of the ports' workers and sums their
// resident memory.
func (e *env) workersFootprint(ctx context.Context, ports []int) (footprint, error) {
	var all []int
	for _, p := range ports {
		ps, err := e.unitPIDs(ctx, serviceUnit(p))
		if err != nil {
			return footprint{}, err
		}
		all = append(all, ps...)
	}
	rss, err := e.rss(ctx, all)
	if err != nil {
		return footprint{}, err
	}
	return footprint{procs: len(all), rss: rss}, nil
}
