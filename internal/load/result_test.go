package load

import (
	"math"
	"testing"
	"time"
)

func near(got, want time.Duration, tol float64) bool {
	return math.Abs(float64(got-want)) <= tol*float64(want)
}

// TestPercentiles checks the percentile math against a fixed sample: the
// latencies 1 ms, 2 ms, … 1000 ms, one each.
func TestPercentiles(t *testing.T) {
	r := newRecorder(100*time.Millisecond, time.Second, 5*time.Second)
	for i := 1; i <= 1000; i++ {
		// Spread over the 10 buckets; bucket b holds i ≡ b (mod 10).
		r.record(outcome{at: time.Duration(i%10) * 100 * time.Millisecond, latency: time.Duration(i) * time.Millisecond, done: 2 * time.Second})
	}
	r.record(outcome{at: 0, class: ClassStatus, status: 503, done: time.Second})
	res := r.result(modeRate, Options{Rate: 1000, Conns: 1}, time.Now())
	for _, c := range []struct {
		name      string
		got, want time.Duration
	}{
		{"p50", res.P50, 500 * time.Millisecond},
		{"p90", res.P90, 900 * time.Millisecond},
		{"p99", res.P99, 990 * time.Millisecond},
		{"p99.9", res.Percentile(99.9), 999 * time.Millisecond},
		{"max", res.Max, 1000 * time.Millisecond},
		{"mean", res.Mean, 500500 * time.Microsecond},
	} {
		if !near(c.got, c.want, 0.001) { // 3 significant digits
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if res.Total != 1001 || res.OK != 1000 || res.Failed != 1 || res.Statuses[503] != 1 {
		t.Errorf("total %d ok %d failed %d statuses %v", res.Total, res.OK, res.Failed, res.Statuses)
	}
	if math.Abs(res.SuccessRatio-1000.0/1001) > 1e-12 {
		t.Errorf("success ratio %v", res.SuccessRatio)
	}
	if res.Elapsed != 2*time.Second || math.Abs(res.AchievedRate-500.5) > 1e-9 || res.Throughput != 500 {
		t.Errorf("elapsed %v rate %v throughput %v", res.Elapsed, res.AchievedRate, res.Throughput)
	}
	if len(res.Timeline) != 10 {
		t.Fatalf("%d buckets, want 10", len(res.Timeline))
	}
	// Bucket 3 holds 3, 13, … 993 ms: median 493 (the 50th of 100), p99 983.
	b := res.Timeline[3]
	if b.Start != 300*time.Millisecond || b.Sent != 100 || b.OK != 100 || b.Failed != 0 {
		t.Errorf("bucket 3 = %+v", b)
	}
	if !near(b.P50, 493*time.Millisecond, 0.01) || !near(b.P99, 983*time.Millisecond, 0.01) {
		t.Errorf("bucket 3 p50 %v p99 %v, want 493ms and 983ms", b.P50, b.P99)
	}
	if b := res.Timeline[0]; b.Sent != 101 || b.Failed != 1 {
		t.Errorf("bucket 0 = %+v, want 101 sent with 1 failed", b)
	}
}

func TestBetween(t *testing.T) {
	r := newRecorder(100*time.Millisecond, time.Second, 5*time.Second)
	for i := 1; i <= 1000; i++ {
		r.record(outcome{at: time.Duration(i%10) * 100 * time.Millisecond, latency: time.Duration(i) * time.Millisecond})
	}
	r.record(outcome{at: 350 * time.Millisecond, class: ClassReset})
	res := r.result(modeRate, Options{Rate: 1000}, time.Now())
	// Buckets 3 and 4 hold 3, 4, 13, 14, … 993, 994 ms: 200 values whose
	// 100th is 494 and 198th is 984; plus one failure.
	s := res.Between(310*time.Millisecond, 450*time.Millisecond)
	if s.From != 300*time.Millisecond || s.To != 500*time.Millisecond {
		t.Errorf("window %v–%v, want 300ms–500ms", s.From, s.To)
	}
	if s.Total != 201 || s.OK != 200 || s.Failed != 1 {
		t.Errorf("total %d ok %d failed %d, want 201/200/1", s.Total, s.OK, s.Failed)
	}
	if !near(s.P50, 494*time.Millisecond, 0.01) || !near(s.P99, 984*time.Millisecond, 0.01) || !near(s.Max, 994*time.Millisecond, 0.01) {
		t.Errorf("p50 %v p99 %v max %v, want 494ms, 984ms, 994ms", s.P50, s.P99, s.Max)
	}
	all := res.Between(0, time.Hour)
	if all.Total != res.Total || all.OK != res.OK || !near(all.P99, res.P99, 0.01) {
		t.Errorf("whole run %+v, want totals %d/%d and p99 %v", all, res.Total, res.OK, res.P99)
	}
	if none := res.Between(2*time.Second, 3*time.Second); none.Total != 0 || none.P99 != 0 {
		t.Errorf("past the end: %+v", none)
	}
}

func TestEmptyResult(t *testing.T) {
	res := newRecorder(DefaultInterval, time.Second, time.Second).result(modeMax, Options{}, time.Now())
	if res.P50 != 0 || res.P99 != 0 || res.Max != 0 || res.Mean != 0 || res.SuccessRatio != 0 || res.AchievedRate != 0 {
		t.Errorf("empty result has figures: %+v", res)
	}
	if len(res.Timeline) != 0 {
		t.Errorf("a run without requests has a timeline of %d buckets", len(res.Timeline))
	}
}
