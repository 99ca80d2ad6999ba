package security

import (
	"context"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// monotonic is CLOCK_MONOTONIC in µs, the clock of systemd's *Monotonic
// timestamps (the machine shares the host's).
func monotonic() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano() / 1000
}

// TestTriggerLimitStormServesWithin2s: a socket whose trigger limit is
// TriggerLimitBurst=3 per 5 s, its worker killed with SIGKILL again and
// again, each kill followed by a connection: the socket fails on its
// trigger limit, which no reset clears, and the port serves again within 2
// s of the failure.
func TestTriggerLimitStormServesWithin2s(t *testing.T) {
	ctx := context.Background()
	port := strconv.Itoa(portStorm)
	svc, sock := "lodis@"+port+".service", "lodis@"+port+".socket"
	addr := loopback(portStorm)
	if !serves(addr, 5*time.Second) {
		t.Fatalf("port %s does not serve", port)
	}
	failedAt := int64(0)
	storm := time.Now()
	for i := 0; i < 40 && time.Since(storm) < 20*time.Second; i++ {
		if pid := mainPID(svc); pid > 0 {
			m.Output(ctx, "kill", "-9", strconv.Itoa(pid))
		}
		get("http://"+addr+"/__/health", time.Second)
		if m.Prop(ctx, sock, "Result") == "trigger-limit-hit" {
			failedAt, _ = strconv.ParseInt(m.Prop(ctx, sock, "InactiveEnterTimestampMonotonic"), 10, 64)
			t.Logf("trigger limit hit after %d kills", i+1)
			break
		}
	}
	if failedAt == 0 {
		t.Fatalf("40 kills did not hit the trigger limit: %s %s", m.State(ctx, sock), m.Prop(ctx, sock, "Result"))
	}
	var servedAt int64
	err := pollFast(10*time.Second, func() bool {
		if serves(addr, 200*time.Millisecond) {
			servedAt = monotonic()
			return true
		}
		return false
	})
	if err != nil {
		t.Fatalf("port %s did not serve again within 10 s of its trigger limit: %s, %s", port, m.State(ctx, sock), m.State(ctx, svc))
	}
	took := time.Duration(servedAt-failedAt) * time.Microsecond
	t.Logf("FIGURE trigger-limit storm: port %s served again %s after its socket failed (trigger-limit-hit)", port, took.Round(time.Millisecond))
	if took > 2*time.Second {
		t.Errorf("port %s served again only %s after its socket failed, want ≤ 2 s", port, took.Round(time.Millisecond))
	}
	// It keeps serving.
	for i := 0; i < 10; i++ {
		if !serves(addr, time.Second) {
			t.Fatalf("port %s stopped serving %d00 ms after recovering: %s %s", port, i, m.State(ctx, sock), m.State(ctx, svc))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestFloodAndSlowloris: 5,000 idle connections and 200 slowloris clients
// (a header byte a second) on one port, held for 8 s: the other ports keep
// serving throughout, and the flooded port serves again once the flood
// ends. The worker's connection cap and its read timeouts bound what the
// flood holds.
func TestFloodAndSlowloris(t *testing.T) {
	const nIdle, nSlow, hold = 5000, 200, 8 * time.Second
	others := []int{portA, portB}
	for _, p := range append(others, portFlood) {
		if !serves(loopback(p), 5*time.Second) {
			t.Fatalf("port %d does not serve before the flood", p)
		}
	}
	var mu sync.Mutex
	var conns []net.Conn
	dial := func() net.Conn {
		c, err := net.DialTimeout("tcp", loopback(portFlood), 3*time.Second)
		if err != nil {
			return nil
		}
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
		return c
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	start := time.Now()
	// The flood: 5,000 connections that never send a byte, 50 dialers.
	for w := 0; w < 50; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < nIdle/50 && time.Since(start) < 20*time.Second; i++ {
				dial()
			}
		}()
	}
	// The slowloris: a request line, then a header byte a second.
	for i := 0; i < nSlow; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := dial()
			if c == nil {
				return
			}
			c.Write([]byte("GET /__/health HTTP/1.1\r\nHost: x\r\n"))
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-done:
					return
				case <-t.C:
					if _, err := c.Write([]byte("X")); err != nil {
						return
					}
				}
			}
		}()
	}
	// Meanwhile, the other ports, twice a second.
	served := map[int]int{}
	tries := 0
	end := time.Now().Add(hold)
	for time.Now().Before(end) {
		tries++
		for _, p := range others {
			if serves(loopback(p), 2*time.Second) {
				served[p]++
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	mu.Lock()
	opened := len(conns)
	mu.Unlock()
	close(done)
	wg.Wait()
	mu.Lock()
	for _, c := range conns {
		c.Close()
	}
	mu.Unlock()
	floodEnd := time.Now()
	for _, p := range others {
		t.Logf("FIGURE flood: port %d served %d of %d checks during the flood (%d connections opened on port %d)", p, served[p], tries, opened, portFlood)
		if served[p] != tries {
			t.Errorf("port %d served %d of %d checks during the flood", p, served[p], tries)
		}
	}
	if opened < nIdle/2 {
		t.Errorf("only %d flood connections opened: the flood did not happen", opened)
	}
	if err := waitFor(15*time.Second, func() bool { return serves(loopback(portFlood), time.Second) }); err != nil {
		t.Fatalf("port %d does not serve 15 s after the flood ended", portFlood)
	}
	t.Logf("FIGURE flood: port %d served again %s after the flood ended", portFlood, time.Since(floodEnd).Round(time.Millisecond))
}

// TestSandboxScores: systemd-analyze security rates lodis-upgrade.service
// and lodis-rollout@.service (root, with what validating and rolling out
// needs) at most 3.0, the worker at most 1.5, the supervisor at most 4.0
// (test/supervisor's bound); the worker ships memory and task bounds.
func TestSandboxScores(t *testing.T) {
	ctx := context.Background()
	re := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`)
	for _, c := range []struct {
		unit string
		max  float64
	}{
		{"lodis-supervisor.service", 4.0},
		{"lodis-upgrade.service", 3.0},
		{"lodis-rollout@" + releases(t).Active + ".service", 3.0},
		{fmt.Sprintf("lodis@%d.service", portA), 1.5},
		{fmt.Sprintf("lodis-alt@%d.service", portA), 1.5},
	} {
		out, _ := m.Output(ctx, "systemd-analyze", "security", "--no-pager", c.unit)
		mm := re.FindStringSubmatch(out)
		if mm == nil {
			t.Errorf("no exposure level for %s in:\n%s", c.unit, out)
			continue
		}
		score, _ := strconv.ParseFloat(mm[1], 64)
		t.Logf("FIGURE systemd-analyze security %s: %.1f", c.unit, score)
		if score > c.max {
			t.Errorf("%s exposure %.1f > %.1f", c.unit, score, c.max)
		}
	}
	for prop, want := range map[string]string{"MemoryMax": "1073741824", "TasksMax": "512"} {
		if got := m.Prop(ctx, fmt.Sprintf("lodis@%d.service", portA), prop); got != want {
			t.Errorf("worker %s=%s, want %s", prop, got, want)
		}
	}
}
