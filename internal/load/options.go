package load

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/url"
	"time"
)

// Defaults and bounds applied by Run and Max to a zero Options field.
const (
	// DefaultDuration is how long a run schedules requests when
	// Options.Duration is zero.
	DefaultDuration = 10 * time.Second
	// MaxDuration is the longest run accepted: every run stops by itself.
	MaxDuration = 10 * time.Minute
	// DefaultConns is the number of keep-alive connections when
	// Options.Conns is zero.
	DefaultConns = 16
	// DefaultTimeout bounds each request when Options.Timeout is zero.
	DefaultTimeout = 5 * time.Second
	// DefaultInterval is the width of a timeline bucket when
	// Options.Interval is zero.
	DefaultInterval = 100 * time.Millisecond
	// DefaultMaxCount bounds the number of requests Max sends when
	// Options.Count is zero.
	DefaultMaxCount = 10_000_000
)

// Options configures a load run. Only Targets (and Rate, for Run) are
// required; every other zero field takes the default stated next to it.
type Options struct {
	// Targets are the URLs to load, used round-robin: with a fixed rate the
	// n-th scheduled request goes to Targets[n % len(Targets)]. Each must be an
	// http URL whose host is a loopback address (127.0.0.0/8, ::1) or
	// "localhost": load is only ever sent to this machine. Required.
	Targets []string

	// Rate is the total request rate in requests per second across all
	// targets, for Run. Requests are due at fixed times start + n/Rate,
	// whatever the responses do. Required by Run; Max ignores it.
	Rate float64

	// Duration bounds the run: no request is due (Run) or sent (Max) at or
	// after start + Duration. Default DefaultDuration (10 s); at most
	// MaxDuration (10 min). A run returns at most Timeout after Duration.
	Duration time.Duration

	// Count bounds the number of requests. Default for Run: Rate × Duration,
	// so Duration alone decides; for Max: DefaultMaxCount (10 000 000).
	Count int

	// Conns is the number of keep-alive connections (and so of requests in
	// flight at most), shared evenly among the targets with at least one per
	// target. Each connection belongs to one sender that sends one request at a
	// time on it. Default DefaultConns (16).
	Conns int

	// Timeout bounds each request. In Run it is counted from the time the
	// request was due, not from when it could be sent: a request still
	// unanswered Timeout after it was due fails with ClassTimeout, and one whose
	// connection stayed busy that long is not sent and fails with
	// ClassBacklog. In Max it is counted from the send. Default DefaultTimeout
	// (5 s).
	Timeout time.Duration

	// Interval is the width of a Timeline bucket. Default DefaultInterval
	// (100 ms).
	Interval time.Duration

	// Method is the request method. Default "GET".
	Method string

	// Header is added to every request. Default: none.
	Header http.Header

	// AllowRetry, when true, counts a request by its final outcome even when
	// net/http transparently re-sent it on a new connection because the server
	// had closed the reused keep-alive connection under it. By default such a
	// request fails with ClassRetried, as it would for a client that never
	// retries (wrk, most load balancers). Result.Retried counts them either way.
	AllowRetry bool
}

type mode int

const (
	modeRate mode = iota // open loop, fixed rate
	modeMax              // closed loop, as fast as possible
)

func (m mode) String() string {
	if m == modeMax {
		return "max"
	}
	return "rate"
}

// normalized returns o with defaults applied, or an error naming the first
// field that is wrong.
func (o Options) normalized(m mode) (Options, []*url.URL, error) {
	if len(o.Targets) == 0 {
		return o, nil, errors.New("no target")
	}
	urls := make([]*url.URL, len(o.Targets))
	for i, t := range o.Targets {
		u, err := checkTarget(t)
		if err != nil {
			return o, nil, err
		}
		urls[i] = u
	}
	if o.Duration == 0 {
		o.Duration = DefaultDuration
	}
	if o.Duration < 0 || o.Duration > MaxDuration {
		return o, nil, fmt.Errorf("duration %v out of range (0, %v]", o.Duration, MaxDuration)
	}
	if m == modeRate {
		if !(o.Rate > 0) || math.IsInf(o.Rate, 0) {
			return o, nil, fmt.Errorf("rate %v: want a positive number of requests per second", o.Rate)
		}
	}
	if o.Count < 0 {
		return o, nil, fmt.Errorf("count %d is negative", o.Count)
	}
	if o.Count == 0 {
		if m == modeRate {
			o.Count = int(math.Ceil(o.Rate * o.Duration.Seconds()))
		} else {
			o.Count = DefaultMaxCount
		}
	}
	if o.Conns < 0 {
		return o, nil, fmt.Errorf("conns %d is negative", o.Conns)
	}
	if o.Conns == 0 {
		o.Conns = DefaultConns
	}
	if o.Conns < len(o.Targets) {
		o.Conns = len(o.Targets)
	}
	if o.Timeout < 0 {
		return o, nil, fmt.Errorf("timeout %v is negative", o.Timeout)
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Interval < 0 {
		return o, nil, fmt.Errorf("interval %v is negative", o.Interval)
	}
	if o.Interval == 0 {
		o.Interval = DefaultInterval
	}
	if o.Method == "" {
		o.Method = http.MethodGet
	}
	return o, urls, nil
}

// checkTarget parses t and refuses anything but http to a loopback host.
func checkTarget(t string) (*url.URL, error) {
	u, err := url.Parse(t)
	if err != nil {
		return nil, fmt.Errorf("target %q: %w", t, err)
	}
	if u.Scheme != "http" {
		return nil, fmt.Errorf("target %q: scheme must be http", t)
	}
	host := u.Hostname()
	if host == "localhost" {
		return u, nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("target %q: host must be a loopback address or localhost", t)
	}
	return u, nil
}
