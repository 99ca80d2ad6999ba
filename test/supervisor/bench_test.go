package supervisor_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lodis/lodis/bench/load"
	"github.com/lodis/lodis/supervisor"
	"github.com/lodis/lodis/test/machine"
)

// The supervisor benchmark. Run with
//
//	go test -run '^$' -bench Supervisor -benchtime 1x ./test/supervisor
//
//	idle        10 ports enabled and idle: workers running (goal 0) and the
//	            supervisor's RSS (goal ≤ 20 MB)
//	kill        50 × SIGKILL to the running worker of one port: time from the
//	            kill to the supervisor's failure event (detected) and to the
//	            port answering from a new worker (serving), p50/p99
//	            (goal ≤ 200 ms)
//	chaos       the chaos demo (10 ports, --chaos-abort-rate 0.5) for 60 s at
//	            200 req/s through nginx and 200 req/s straight to the ports:
//	            success ratio of each (goal through nginx ≥ 99.99 %)
func BenchmarkSupervisor(b *testing.B) {
	for range b.N {
		benchIdle(b)
		benchKill(b, 50)
		benchChaos(b, 60*time.Second)
	}
}

func countWorkers(tb testing.TB) int {
	out, err := m.Output(context.Background(), "systemctl", "list-units", "--state=active", "--plain", "--no-legend", "lodis@*.service")
	if err != nil {
		tb.Fatal(err)
	}
	return strings.Count(out, ".service ")
}

func supervisorRSS(tb testing.TB) float64 {
	ctx := context.Background()
	pid := mainPID(ctx, "lodis-supervisor.service")
	out, err := m.Output(ctx, "grep", "VmRSS", fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	f := strings.Fields(out) // VmRSS: 12345 kB
	kb, _ := strconv.Atoi(f[1])
	return float64(kb) / 1024
}

func benchIdle(b *testing.B) {
	ports := chaosPorts()
	enablePorts(b, ports, "")
	time.Sleep(3 * time.Second) // probes and sweeps run
	if err := machine.WaitFor(context.Background(), 5*time.Second, func() (bool, string) {
		s, err := statusJSON(context.Background())
		return err == nil && len(s.Instances) >= len(ports), fmt.Sprint(err)
	}); err != nil {
		b.Fatal(err)
	}
	workers, rss := countWorkers(b), supervisorRSS(b)
	b.ReportMetric(float64(workers), "idle-workers")
	b.ReportMetric(rss, "supervisor-rss-MB")
	b.Logf("idle: %d ports enabled, %d workers running, supervisor RSS %.1f MB", len(ports), workers, rss)
}

// hostPID finds, from the host, the process that is pid inside the machine.
func hostPID(pid int) (int, error) {
	want, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", m.Leader))
	if err != nil {
		return 0, err
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", n)); ns != want {
			continue
		}
		st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", n))
		for _, l := range strings.Split(string(st), "\n") {
			if f := strings.Fields(l); len(f) > 1 && f[0] == "NSpid:" && f[len(f)-1] == strconv.Itoa(pid) {
				return n, nil
			}
		}
	}
	return 0, fmt.Errorf("no host process for machine pid %d", pid)
}

func benchKill(b *testing.B, kills int) {
	const port = 18290
	enablePorts(b, []int{port}, "")
	unit := supervisor.ServiceUnit(strconv.Itoa(port))
	var detect, serve []time.Duration
	for i := 0; i < kills; i++ {
		pid, err := health(port, 5*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		hp, err := hostPID(pid)
		if err != nil {
			b.Fatal(err)
		}
		after := lastSeq(b)
		t0 := time.Now()
		if err := syscall.Kill(hp, syscall.SIGKILL); err != nil {
			b.Fatal(err)
		}
		for {
			if p, err := health(port, time.Second); err == nil && p != pid {
				serve = append(serve, time.Since(t0))
				break
			}
			if time.Since(t0) > 10*time.Second {
				b.Fatalf("port %d not serving 10 s after kill %d", port, i+1)
			}
			time.Sleep(2 * time.Millisecond)
		}
		e := waitEvent(b, port, after, 5*time.Second, "failure event", func(e supervisor.Event) bool {
			return e.Unit == unit && e.To == "failed/failed"
		})
		detect = append(detect, e.Time.Sub(t0))
		time.Sleep(100 * time.Millisecond) // a worker that lives a little
	}
	pct := func(d []time.Duration, p float64) float64 {
		s := slices.Clone(d)
		slices.Sort(s)
		return float64(s[min(len(s)-1, int(p*float64(len(s))))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(detect, 0.5), "kill-detect-p50-ms")
	b.ReportMetric(pct(detect, 0.99), "kill-detect-p99-ms")
	b.ReportMetric(pct(serve, 0.5), "kill-serving-p50-ms")
	b.ReportMetric(pct(serve, 0.99), "kill-serving-p99-ms")
	b.Logf("kill -9 ×%d: detected by the supervisor p50 %.1f ms p99 %.1f ms; port serving from a new worker p50 %.1f ms p99 %.1f ms",
		kills, pct(detect, 0.5), pct(detect, 0.99), pct(serve, 0.5), pct(serve, 0.99))
}

func benchChaos(b *testing.B, dur time.Duration) {
	const rate = 200
	ports := chaosPorts()
	enablePorts(b, ports, chaosDropIn)
	startNginx(b, chaosFront, ports)
	var direct []string
	for _, p := range ports {
		direct = append(direct, fmt.Sprintf("http://127.0.0.1:%d/__/time", p))
	}
	after := lastSeq(b)
	ctx, stop := context.WithTimeout(context.Background(), dur)
	defer stop()
	refusals := watchRefusals(ctx, ports)
	type out struct {
		r   *load.Result
		err error
	}
	viaDirect := make(chan out, 1)
	go func() {
		r, err := load.Run(context.Background(), load.Options{Targets: direct, Rate: rate, Duration: dur, Conns: 20})
		viaDirect <- out{r, err}
	}()
	nginx, err := load.Run(context.Background(), load.Options{
		Targets: []string{fmt.Sprintf("http://127.0.0.1:%d/__/time", chaosFront)}, Rate: rate, Duration: dur})
	if err != nil {
		b.Fatal(err)
	}
	d := <-viaDirect
	if d.err != nil {
		b.Fatal(d.err)
	}
	worst := slices.Max(refusals())
	crashes := workerCrashes(b, after)
	b.ReportMetric(100*nginx.SuccessRatio, "chaos-nginx-ok-%")
	b.ReportMetric(100*d.r.SuccessRatio, "chaos-direct-ok-%")
	b.ReportMetric(float64(crashes), "chaos-crashes")
	b.ReportMetric(worst.Seconds(), "chaos-longest-refusal-s")
	b.ReportMetric(supervisorRSS(b), "supervisor-rss-after-chaos-MB")
	b.Logf("chaos %s, %d ports, p=0.5/s: through nginx %d/%d ok (%.4f%%, failures %v, p99 %.1f ms); direct %d/%d ok (%.4f%%, failures %v); %d worker crashes; longest refusal %s",
		dur, len(ports), nginx.OK, nginx.Total, 100*nginx.SuccessRatio, nginx.Failures, float64(nginx.Percentile(99).Microseconds())/1000,
		d.r.OK, d.r.Total, 100*d.r.SuccessRatio, d.r.Failures, crashes, worst)
}
