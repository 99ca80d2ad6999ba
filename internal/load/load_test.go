package load

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// everyNth returns a handler that answers 200 and lets fail handle every
// n-th request it receives, and the counter of received requests.
func everyNth(n int64, fail func(w http.ResponseWriter)) (http.Handler, *atomic.Int64) {
	var seen atomic.Int64
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if seen.Add(1)%n == 0 {
			fail(w)
			return
		}
		w.Write([]byte("ok\n"))
	}), &seen
}

func server(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s
}

func mustRun(t *testing.T, run func(context.Context, Options) (*Result, error), o Options) *Result {
	t.Helper()
	res, err := run(t.Context(), o)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	return res
}

func TestRunCountsStatusFailures(t *testing.T) {
	h, seen := everyNth(10, func(w http.ResponseWriter) { http.Error(w, "boom", http.StatusInternalServerError) })
	s := server(t, h)
	res := mustRun(t, Run, Options{Targets: []string{s.URL}, Rate: 1000, Count: 200, Conns: 8})
	if res.Total != 200 || res.OK != 180 || res.Failed != 20 {
		t.Errorf("total/ok/failed = %d/%d/%d, want 200/180/20", res.Total, res.OK, res.Failed)
	}
	if got := res.Failures[ClassStatus]; got != 20 || len(res.Failures) != 1 {
		t.Errorf("failures = %v, want status:20 only", res.Failures)
	}
	if got := res.Statuses[500]; got != 20 || len(res.Statuses) != 1 {
		t.Errorf("statuses = %v, want 500:20 only", res.Statuses)
	}
	if res.SuccessRatio != 0.9 {
		t.Errorf("success ratio = %v, want 0.9", res.SuccessRatio)
	}
	if n := seen.Load(); n != 200 {
		t.Errorf("server saw %d requests, want 200", n)
	}
	sent := 0
	for _, b := range res.Timeline {
		sent += b.Sent
		if b.OK+b.Failed != b.Sent {
			t.Errorf("bucket at %v: ok %d + failed %d != sent %d", b.Start, b.OK, b.Failed, b.Sent)
		}
	}
	if sent != res.Total {
		t.Errorf("timeline sums to %d requests, want %d", sent, res.Total)
	}
}

// closeConn hijacks the connection and closes it without a response, as a
// worker that crashes mid-request would.
func closeConn(w http.ResponseWriter) {
	c, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(err)
	}
	c.Close()
}

// resetConn hijacks the connection and resets it (RST, not FIN).
func resetConn(w http.ResponseWriter) {
	c, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(err)
	}
	c.(*net.TCPConn).SetLinger(0)
	c.Close()
}

func TestRunCountsClosedConnections(t *testing.T) {
	for _, tc := range []struct {
		name  string
		drop  func(http.ResponseWriter)
		allow bool
	}{
		{"close", closeConn, false},
		{"close-allow-retry", closeConn, true},
		{"reset", resetConn, false},
		{"reset-allow-retry", resetConn, true},
	} {
		allow := tc.allow
		t.Run(tc.name, func(t *testing.T) {
			h, seen := everyNth(10, tc.drop)
			s := server(t, h)
			res := mustRun(t, Run, Options{Targets: []string{s.URL}, Rate: 1000, Count: 200, Conns: 4, AllowRetry: allow})
			// Every 10th request the server received was dropped. A drop on a
			// reused connection is re-sent by net/http (Retried counts the
			// re-sends); the last drop of a request surfaces as its error.
			dropped := int(seen.Load() / 10)
			t.Logf("server saw %d, dropped %d; failures %v, re-sent %d", seen.Load(), dropped, res.Failures, res.Retried)
			if got := int(seen.Load()) - res.Retried; got != 200 {
				t.Errorf("server saw %d requests, %d re-sent: want 200 first attempts", seen.Load(), res.Retried)
			}
			if res.Total != 200 || res.OK+res.Failed != 200 {
				t.Errorf("total %d ok %d failed %d, want 200 in all", res.Total, res.OK, res.Failed)
			}
			lastDrops := res.Failed - res.Failures[ClassRetried]
			if res.Retried+lastDrops != dropped {
				t.Errorf("%d re-sent + %d failed on their last attempt (%v) != %d dropped", res.Retried, lastDrops, res.Failures, dropped)
			}
			if res.Failures[ClassStatus] != 0 || res.Failures[ClassOther] != 0 {
				t.Errorf("failures = %v: a dropped connection is no status or other error", res.Failures)
			}
			if !allow && (res.Failed == 0 || res.Failures[ClassRetried] > res.Retried) {
				t.Errorf("failed %d (%v) re-sent %d: a drop must fail its request", res.Failed, res.Failures, res.Retried)
			}
			if allow && res.Failures[ClassRetried] != 0 {
				t.Errorf("failures[retried] = %d with AllowRetry", res.Failures[ClassRetried])
			}
		})
	}
}

func TestRunCountsRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	res := mustRun(t, Run, Options{Targets: []string{"http://" + addr + "/"}, Rate: 1000, Count: 50})
	if res.Failed != 50 || res.Failures[ClassRefused] != 50 {
		t.Errorf("failed %d, failures %v: want 50 refused", res.Failed, res.Failures)
	}
	if res.SuccessRatio != 0 || res.P99 != 0 {
		t.Errorf("success ratio %v p99 %v, want 0 and 0", res.SuccessRatio, res.P99)
	}
}

func TestRunCountsTimeouts(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	var seen atomic.Int64
	s := server(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if seen.Add(1)%10 == 0 {
			select {
			case <-r.Context().Done():
			case <-release:
			}
			return
		}
	}))
	// Two seconds are far beyond a fast answer even on a busy machine.
	res := mustRun(t, Run, Options{Targets: []string{s.URL}, Rate: 500, Count: 100, Conns: 20, Timeout: 2 * time.Second})
	if res.Failures[ClassTimeout] != 10 || res.Failed != 10 {
		t.Errorf("failures %v, want 10 timeouts only", res.Failures)
	}
}

func TestRunHonoursRate(t *testing.T) {
	var mu sync.Mutex
	var arrivals []time.Time
	s := server(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		arrivals = append(arrivals, time.Now())
		mu.Unlock()
	}))
	const rate = 200
	start := time.Now()
	res := mustRun(t, Run, Options{Targets: []string{s.URL}, Rate: rate, Duration: time.Second, Conns: 4})
	if res.Total != rate || res.OK != rate {
		t.Fatalf("total %d ok %d, want %d", res.Total, res.OK, rate)
	}
	mu.Lock()
	defer mu.Unlock()
	// Requests are due from 0 to 995 ms; allow generous scheduling noise on a
	// shared machine, but never sending ahead of the schedule.
	early := 0
	for _, a := range arrivals {
		if a.Sub(start) < 500*time.Millisecond {
			early++
		}
	}
	if early > rate/2+5 {
		t.Errorf("%d requests arrived in the first half second, want at most %d", early, rate/2+5)
	}
	// How late the requests run depends on the machine; a loose bound only
	// catches a generator that stalls.
	span := arrivals[len(arrivals)-1].Sub(arrivals[0])
	if span < 900*time.Millisecond || span > 20*time.Second {
		t.Errorf("requests arrived over %v, want about 995ms (never ahead of the schedule)", span)
	}
	if res.AchievedRate > 1.1*rate {
		t.Errorf("achieved rate %.1f/s, above the %d/s asked for", res.AchievedRate, rate)
	}
	for _, b := range res.Timeline {
		if b.Sent != rate/10 {
			t.Errorf("bucket at %v: %d due, want %d", b.Start, b.Sent, rate/10)
		}
	}
	if len(res.Timeline) != 10 {
		t.Errorf("%d buckets, want 10", len(res.Timeline))
	}
}

func TestRunStopsAtCount(t *testing.T) {
	h, seen := everyNth(1<<62, nil)
	s := server(t, h)
	start := time.Now()
	res := mustRun(t, Run, Options{Targets: []string{s.URL}, Rate: 1000, Duration: time.Minute, Count: 50})
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("took %v for 50 requests at 1000/s: the count did not end the one-minute run", took)
	}
	if res.Total != 50 || seen.Load() != 50 {
		t.Errorf("total %d, server saw %d: want 50", res.Total, seen.Load())
	}
}

func TestRunStopsAtDuration(t *testing.T) {
	h, seen := everyNth(1<<62, nil)
	s := server(t, h)
	start := time.Now()
	res := mustRun(t, Run, Options{Targets: []string{s.URL}, Rate: 100, Duration: 300 * time.Millisecond})
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("took %v for a 300ms run", took)
	}
	if res.Total != 30 || seen.Load() != 30 {
		t.Errorf("total %d, server saw %d: want 30", res.Total, seen.Load())
	}
}

// A server that never answers must not keep the run going: it ends at most
// Timeout after Duration, every request failed.
func TestRunStopsWhenServerHangs(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	s := server(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	start := time.Now()
	res := mustRun(t, Run, Options{Targets: []string{s.URL}, Rate: 200, Duration: 200 * time.Millisecond, Timeout: 200 * time.Millisecond, Conns: 2})
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("took %v, want about 400ms: the hanging server held the run", took)
	}
	if res.Total != 40 || res.Failed != 40 {
		t.Errorf("total %d failed %d, want 40 and 40", res.Total, res.Failed)
	}
	if res.Failures[ClassTimeout]+res.Failures[ClassBacklog] != 40 {
		t.Errorf("failures %v, want timeouts and backlog only", res.Failures)
	}
}

func TestRunCancel(t *testing.T) {
	h, _ := everyNth(1<<62, nil)
	s := server(t, h)
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	res, err := Run(ctx, Options{Targets: []string{s.URL}, Rate: 100, Duration: time.Minute})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	took := time.Since(start)
	if took > 20*time.Second {
		t.Errorf("took %v after cancel at 200ms", took)
	}
	// About 20 requests were due before the cancel (more if the machine is
	// slow to act on it); some may still be in flight then (Canceled), none
	// may fail, none may be sent ahead of the schedule.
	if res == nil {
		t.Fatal("no partial result")
	}
	due := int(took.Seconds()*100) + 2
	if n := res.Total + res.Canceled; n < 1 || n > due || res.Failed != 0 {
		t.Errorf("partial result: total %d, failed %d, canceled %d: want at most %d requests (due in %v), none failed", res.Total, res.Failed, res.Canceled, due, took)
	}
}

func TestRunRoundRobin(t *testing.T) {
	var targets []string
	var seen []*atomic.Int64
	for range 3 {
		h, n := everyNth(1<<62, nil)
		targets = append(targets, server(t, h).URL)
		seen = append(seen, n)
	}
	res := mustRun(t, Run, Options{Targets: targets, Rate: 1000, Count: 31, Conns: 6})
	if res.Total != 31 {
		t.Fatalf("total %d, want 31", res.Total)
	}
	for i, want := range []int64{11, 10, 10} {
		if got := seen[i].Load(); got != want {
			t.Errorf("target %d saw %d requests, want %d", i, got, want)
		}
	}
}

func TestMax(t *testing.T) {
	h, seen := everyNth(1<<62, nil)
	s := server(t, h)
	res := mustRun(t, Max, Options{Targets: []string{s.URL}, Duration: 300 * time.Millisecond, Conns: 4})
	if res.Total == 0 || res.Failed != 0 || int64(res.Total) != seen.Load() {
		t.Errorf("total %d failed %d, server saw %d", res.Total, res.Failed, seen.Load())
	}
	if res.Throughput <= 0 || res.Mode != "max" || res.Rate != 0 {
		t.Errorf("throughput %v mode %q rate %v", res.Throughput, res.Mode, res.Rate)
	}
	res = mustRun(t, Max, Options{Targets: []string{s.URL}, Duration: time.Minute, Count: 100, Conns: 4})
	if res.Total != 100 {
		t.Errorf("total %d, want the count bound 100", res.Total)
	}
}

func TestOptionsRefused(t *testing.T) {
	for _, o := range []Options{
		{},
		{Targets: []string{"http://127.0.0.1:1/"}},                             // no rate
		{Targets: []string{"http://10.0.0.1/"}, Rate: 1},                       // not loopback
		{Targets: []string{"http://example.com/"}, Rate: 1},                    // not loopback
		{Targets: []string{"https://127.0.0.1/"}, Rate: 1},                     // not http
		{Targets: []string{"http://127.0.0.1/"}, Rate: 1, Duration: time.Hour}, // too long
		{Targets: []string{"http://127.0.0.1/"}, Rate: 1, Count: -1},
	} {
		if _, err := Run(t.Context(), o); err == nil {
			t.Errorf("Run(%+v) accepted", o)
		}
	}
	for _, ok := range []string{"http://localhost:1/", "http://[::1]:1/", "http://127.0.0.2:1/x"} {
		if _, _, err := (Options{Targets: []string{ok}, Rate: 1}).normalized(modeRate); err != nil {
			t.Errorf("%s refused: %v", ok, err)
		}
	}
}

// On a fresh connection net/http does not retry: a server that closes or
// resets every connection shows its own class.
func TestRunClassifiesFreshConnectionDrops(t *testing.T) {
	for _, tc := range []struct {
		drop func(http.ResponseWriter)
		want Class
	}{{closeConn, ClassEOF}, {resetConn, ClassReset}} {
		h, _ := everyNth(1, tc.drop)
		s := server(t, h)
		res := mustRun(t, Run, Options{Targets: []string{s.URL}, Rate: 500, Count: 20, Conns: 1})
		if res.Failed != 20 || res.Failures[tc.want] != 20 || res.Retried != 0 {
			t.Errorf("failures %v retried %d, want %s:20", res.Failures, res.Retried, tc.want)
		}
	}
}

func TestClassify(t *testing.T) {
	op := func(err error) error {
		return &url.Error{Op: "Get", URL: "http://127.0.0.1/", Err: &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", err)}}
	}
	for _, c := range []struct {
		err  error
		want Class
	}{
		{op(syscall.ECONNREFUSED), ClassRefused},
		{op(syscall.ECONNRESET), ClassReset},
		{op(syscall.EPIPE), ClassReset},
		{&url.Error{Op: "Get", Err: io.EOF}, ClassEOF},
		{fmt.Errorf("body: %w", io.ErrUnexpectedEOF), ClassEOF},
		{&url.Error{Op: "Get", Err: context.DeadlineExceeded}, ClassTimeout},
		{op(os.ErrDeadlineExceeded), ClassTimeout},
		{errors.New("net/http: HTTP/1.x transport connection broken: malformed HTTP response"), ClassOther},
	} {
		if got := classify(c.err); got != c.want {
			t.Errorf("classify(%v) = %s, want %s", c.err, got, c.want)
		}
	}
}

func TestBackgroundStopEndsTheLoad(t *testing.T) {
	h, _ := everyNth(1<<62, nil)
	s := server(t, h)
	stop := Background(t.Context(), Options{Targets: []string{s.URL}, Rate: 100, Duration: time.Minute})
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	res, err := stop()
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("stop took %v", took)
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want canceled", err)
	}
	if res == nil || res.OK < 1 || res.Failed != 0 {
		t.Fatalf("result %+v: want some requests answered, none failed", res)
	}
}
