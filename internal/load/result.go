package load

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// Class is why a request failed.
type Class string

// The failure classes. A request fails on a transport error, a timeout or a
// status outside 2xx.
const (
	ClassRefused Class = "refused" // connection refused: nothing listening
	ClassReset   Class = "reset"   // connection reset by peer, or broken pipe on write
	ClassEOF     Class = "eof"     // connection closed before a complete response
	ClassTimeout Class = "timeout" // no complete response within Options.Timeout
	ClassStatus  Class = "status"  // a response whose status is not 2xx (see Result.Statuses)
	ClassRetried Class = "retried" // lost on a reused keep-alive connection, then answered when net/http re-sent it (see Options.AllowRetry)
	ClassBacklog Class = "backlog" // not sent: its connection stayed busy until Timeout past its due time
	ClassOther   Class = "other"   // any other transport error
)

// Classes lists every Class in a stable order, for reports.
var Classes = []Class{ClassRefused, ClassReset, ClassEOF, ClassTimeout, ClassStatus, ClassRetried, ClassBacklog, ClassOther}

// Bucket is one interval of a Result's timeline. Requests are placed by the
// time they were due (Run) or sent (Max), so a crash or an upgrade shows in the
// bucket where the affected requests started.
type Bucket struct {
	Start  time.Duration // offset of the interval from Result.Start
	Sent   int           // requests due (Run) or sent (Max) in the interval
	OK     int           // of those, answered with a 2xx status
	Failed int           // of those, failed
	P50    time.Duration // median latency of the OK ones; 0 when OK is 0
	P99    time.Duration // 99th percentile latency of the OK ones; 0 when OK is 0
}

// Result is the outcome of a run. Latency figures cover successful requests
// only (a refused connection fails fast and would flatter them); in Run a
// request's latency runs from the time it was due, so queueing behind a slow
// response counts. Percentiles are accurate to 3 significant digits.
type Result struct {
	Mode     string        // "rate" (Run) or "max" (Max)
	Targets  []string      // the targets loaded
	Rate     float64       // requested rate in requests/s; 0 for Max
	Conns    int           // keep-alive connections used, at most
	Interval time.Duration // width of a Timeline bucket
	Start    time.Time     // when the first request was due or sent
	Elapsed  time.Duration // from Start to the last response

	Total    int           // requests accounted for: OK + Failed
	OK       int           // answered with a 2xx status
	Failed   int           // failed, for any Class
	Failures map[Class]int // failed requests by class; classes with none are absent
	Statuses map[int]int   // non-2xx responses by status code
	Retried  int           // re-sends: attempts net/http made beyond the first (see ClassRetried)
	Canceled int           // in flight when ctx was cancelled; not in Total

	SuccessRatio float64 // OK / Total; 0 when Total is 0
	AchievedRate float64 // Total / Elapsed, in requests/s
	Throughput   float64 // OK / Elapsed, in requests/s

	P50, P90, P99 time.Duration // latency percentiles of OK requests
	Max           time.Duration // largest latency of an OK request
	Mean          time.Duration // mean latency of OK requests

	// Latency holds every OK request's latency in microseconds, for merging
	// runs or asking for other percentiles. It is not marshalled to JSON.
	Latency *hdrhistogram.Histogram `json:"-"`

	// Timeline has one Bucket per Interval from Start to the end of
	// Duration, or to the last request when Count or ctx ended the run first.
	Timeline []Bucket

	slots []*hdrhistogram.Histogram // per Timeline bucket, nil where no OK
}

// Summary describes the requests of part of a run.
type Summary struct {
	From, To      time.Duration // the part, from Result.Start, on bucket boundaries
	Total         int           // requests due (Run) or sent (Max) in it
	OK            int           // of those, answered with a 2xx status
	Failed        int           // of those, failed
	P50, P99, Max time.Duration // latency of the OK ones, to 2 significant digits; 0 when OK is 0
}

// Between summarizes the requests due (Run) or sent (Max) from offset from to
// offset to, widened to whole Timeline buckets: from is rounded down and to
// up to a multiple of Interval. Use it for an upgrade window, or for the
// steady state before it.
func (r *Result) Between(from, to time.Duration) Summary {
	if r.Interval <= 0 {
		return Summary{}
	}
	first := max(int(from/r.Interval), 0)
	last := min(int((to+r.Interval-1)/r.Interval), len(r.Timeline))
	s := Summary{From: time.Duration(first) * r.Interval, To: time.Duration(max(last, first)) * r.Interval}
	var h *hdrhistogram.Histogram
	for i := first; i < last; i++ {
		b := r.Timeline[i]
		s.Total += b.Sent
		s.OK += b.OK
		s.Failed += b.Failed
		if i < len(r.slots) && r.slots[i] != nil {
			if h == nil {
				h = hdrhistogram.New(histLowest, r.slots[i].HighestTrackableValue(), slotDigits)
			}
			h.Merge(r.slots[i])
		}
	}
	if h != nil {
		s.P50 = time.Duration(h.ValueAtPercentile(50)) * time.Microsecond
		s.P99 = time.Duration(h.ValueAtPercentile(99)) * time.Microsecond
		s.Max = time.Duration(h.Max()) * time.Microsecond
	}
	return s
}

// Percentile returns the latency of OK requests at percentile p (0 to 100).
func (r *Result) Percentile(p float64) time.Duration {
	if r.Latency == nil {
		return 0
	}
	return time.Duration(r.Latency.ValueAtPercentile(p)) * time.Microsecond
}

// histogram bounds, in microseconds.
const (
	histLowest  = 1
	histDigits  = 3 // whole run
	slotDigits  = 2 // per Timeline bucket: 1% is plenty for a plot
	minHighest  = int64(time.Second / time.Microsecond)
	histPadding = 2 // highest trackable is Timeout × histPadding
)

// recorder accumulates outcomes from every sender. One mutex guards it: a
// record costs well under a microsecond, far below a request's cost.
type recorder struct {
	mu       sync.Mutex
	interval time.Duration
	highest  int64
	all      *hdrhistogram.Histogram
	buckets  []slot
	total    int
	ok       int
	failures map[Class]int
	statuses map[int]int
	retried  int
	canceled int
	max      time.Duration
	last     time.Duration // offset of the last response
}

type slot struct {
	sent, ok, failed int
	h                *hdrhistogram.Histogram
}

func newRecorder(interval, duration, timeout time.Duration) *recorder {
	highest := max(int64(timeout/time.Microsecond)*histPadding, minHighest)
	n := int((duration + interval - 1) / interval)
	return &recorder{
		interval: interval,
		highest:  highest,
		all:      hdrhistogram.New(histLowest, highest, histDigits),
		buckets:  make([]slot, n),
		failures: make(map[Class]int),
		statuses: make(map[int]int),
	}
}

// outcome is what one request came to.
type outcome struct {
	at      time.Duration // when it was due (Run) or sent (Max), from the start
	done    time.Duration // when it completed, from the start
	latency time.Duration
	class   Class // "" when OK
	status  int   // the response status, 0 when none
	retries int   // attempts beyond the first
}

func (r *recorder) record(o outcome) {
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.bucket(o.at)
	b.sent++
	r.total++
	r.retried += o.retries
	if o.done > r.last {
		r.last = o.done
	}
	if o.status != 0 && (o.status < 200 || o.status > 299) {
		r.statuses[o.status]++
	}
	if o.class != "" {
		b.failed++
		r.failures[o.class]++
		return
	}
	b.ok++
	r.ok++
	us := min(max(int64(o.latency/time.Microsecond), histLowest), r.highest)
	r.all.RecordValue(us)
	if b.h == nil {
		b.h = hdrhistogram.New(histLowest, r.highest, slotDigits)
	}
	b.h.RecordValue(us)
	r.max = max(r.max, o.latency)
}

func (r *recorder) cancel() {
	r.mu.Lock()
	r.canceled++
	r.mu.Unlock()
}

// bucket returns the slot for offset at, growing the timeline if needed (a
// closed-loop send can land a hair past the last planned bucket).
func (r *recorder) bucket(at time.Duration) *slot {
	i := max(int(at/r.interval), 0)
	for i >= len(r.buckets) {
		r.buckets = append(r.buckets, slot{})
	}
	return &r.buckets[i]
}

func (r *recorder) result(m mode, o Options, start time.Time) *Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	res := &Result{
		Mode:     m.String(),
		Targets:  append([]string(nil), o.Targets...),
		Conns:    o.Conns,
		Interval: r.interval,
		Start:    start,
		Elapsed:  r.last,
		Total:    r.total,
		OK:       r.ok,
		Failed:   r.total - r.ok,
		Failures: r.failures,
		Statuses: r.statuses,
		Retried:  r.retried,
		Canceled: r.canceled,
		Max:      r.max,
		Latency:  r.all,
	}
	// Buckets past the last request (the run ended on Count or ctx) are
	// dropped: they would read as a quiet stretch that never happened.
	n := len(r.buckets)
	for n > 0 && r.buckets[n-1].sent == 0 {
		n--
	}
	res.Timeline = make([]Bucket, n)
	res.slots = make([]*hdrhistogram.Histogram, n)
	if m == modeRate {
		res.Rate = o.Rate
	}
	if res.Total > 0 {
		res.SuccessRatio = float64(res.OK) / float64(res.Total)
	}
	if s := res.Elapsed.Seconds(); s > 0 {
		res.AchievedRate = float64(res.Total) / s
		res.Throughput = float64(res.OK) / s
	}
	res.P50 = res.Percentile(50)
	res.P90 = res.Percentile(90)
	res.P99 = res.Percentile(99)
	res.Mean = time.Duration(r.all.Mean() * float64(time.Microsecond))
	for i, b := range r.buckets[:n] {
		tb := Bucket{Start: time.Duration(i) * r.interval, Sent: b.sent, OK: b.ok, Failed: b.failed}
		if b.h != nil {
			res.slots[i] = b.h
			tb.P50 = time.Duration(b.h.ValueAtPercentile(50)) * time.Microsecond
			tb.P99 = time.Duration(b.h.ValueAtPercentile(99)) * time.Microsecond
		}
		res.Timeline[i] = tb
	}
	return res
}

// classify names the transport error err. Timeouts are checked first: a
// deadline can surface wrapped in any of the others.
func classify(err error) Class {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return ClassTimeout
	case errors.Is(err, syscall.ECONNREFUSED):
		return ClassRefused
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNABORTED):
		return ClassReset
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return ClassEOF
	}
	// net/http reports some closes by text only.
	switch msg := err.Error(); {
	case strings.Contains(msg, "server closed idle connection"),
		strings.Contains(msg, "EOF"):
		return ClassEOF
	case strings.Contains(msg, "connection reset"), strings.Contains(msg, "broken pipe"):
		return ClassReset
	}
	return ClassOther
}
