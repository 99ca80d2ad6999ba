// Package load is the load generator of every lodis benchmark and of the
// tests that measure what load sees (the chaos and upgrade tests).
//
// Run sends requests at a fixed rate (open loop): request n is due at
// start + n/Rate whatever earlier responses do, and its latency is measured
// from that due time, so a stalled server cannot hide latency by slowing the
// client down (no coordinated omission). Max sends as fast as a fixed number
// of connections allow (closed loop), for throughput comparisons.
//
// Both keep connections alive, spread the load round-robin over a list of
// loopback targets, are bounded in duration and in count, stop by themselves
// and stop early when their context is cancelled. Both return a Result with
// the success ratio, failures by class, latency percentiles and a timeline
// of Options.Interval buckets in which a crash or an upgrade shows as a spike.
package load

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"sync"
	"sync/atomic"
	"time"
)

// Run loads o.Targets at o.Rate requests per second for o.Duration or
// o.Count requests, whichever comes first, and returns when every request is
// answered or has failed (at most o.Timeout after o.Duration).
//
// It returns an error without sending anything when o is invalid. When ctx is
// cancelled it stops sending, aborts the requests in flight (counted in
// Result.Canceled, not in Total) and returns the partial Result with ctx's
// error.
func Run(ctx context.Context, o Options) (*Result, error) {
	return run(ctx, o, modeRate)
}

// Max loads o.Targets as fast as o.Conns connections allow, each sending its
// next request as soon as the previous one is answered, for o.Duration or
// o.Count requests, whichever comes first; Rate is ignored. The figure to
// compare is Result.Throughput. Errors and cancellation are as for Run.
func Max(ctx context.Context, o Options) (*Result, error) {
	return run(ctx, o, modeMax)
}

func run(ctx context.Context, o Options, m mode) (*Result, error) {
	o, urls, err := o.normalized(m)
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	g := &generator{
		opts:    o,
		mode:    m,
		rec:     newRecorder(o.Interval, o.Duration, o.Timeout),
		targets: make([]target, len(urls)),
	}
	n := len(urls)
	for t := range g.targets {
		// Conns split evenly; the first Conns % n targets get one more.
		senders := o.Conns / n
		if t < o.Conns%n {
			senders++
		}
		g.targets[t] = target{url: urls[t].String(), senders: senders, transport: newTransport(senders, o.Timeout)}
	}
	defer func() {
		for t := range g.targets {
			g.targets[t].transport.CloseIdleConnections()
		}
	}()

	g.start = time.Now()
	var wg sync.WaitGroup
	for t := range g.targets {
		for range g.targets[t].senders {
			wg.Go(func() { g.send(ctx, t) })
		}
	}
	wg.Wait()
	res := g.rec.result(m, o, g.start)
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("load: run cancelled: %w", err)
	}
	return res, nil
}

type generator struct {
	opts    Options
	mode    mode
	rec     *recorder
	targets []target
	start   time.Time
	next    atomic.Int64 // Max: requests taken so far, all targets together
}

type target struct {
	url       string
	senders   int
	transport *http.Transport
	next      atomic.Int64 // Run: this target's requests taken so far
}

// newTransport returns a keep-alive transport holding at most conns
// connections to its one target. It ignores proxy settings: load goes to
// loopback only.
func newTransport(conns int, timeout time.Duration) *http.Transport {
	d := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:               nil,
		DialContext:         d.DialContext,
		MaxConnsPerHost:     conns,
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
}

// send is one sender: it owns (at most) one connection to target t and sends
// one request at a time until a bound is reached or ctx is done.
func (g *generator) send(ctx context.Context, t int) {
	tg := &g.targets[t]
	var timer *time.Timer
	if g.mode == modeRate {
		timer = time.NewTimer(time.Hour)
		timer.Stop()
		defer timer.Stop()
	}
	n := int64(len(g.targets))
	for ctx.Err() == nil {
		var due time.Duration
		var deadline time.Time
		if g.mode == modeRate {
			// This target's k-th request is the run's (t + k·n)-th.
			i := int64(t) + (tg.next.Add(1)-1)*n
			if i >= int64(g.opts.Count) {
				return
			}
			due = time.Duration(float64(i) * float64(time.Second) / g.opts.Rate)
			if due >= g.opts.Duration {
				return
			}
			if wait := time.Until(g.start.Add(due)); wait > 0 {
				timer.Reset(wait)
				select {
				case <-ctx.Done():
					return
				case <-timer.C:
				}
			}
			deadline = g.start.Add(due + g.opts.Timeout)
			if !time.Now().Before(deadline) {
				g.rec.record(outcome{at: due, done: time.Since(g.start), class: ClassBacklog})
				continue
			}
		} else {
			if g.next.Add(1) > int64(g.opts.Count) {
				return
			}
			due = time.Since(g.start)
			if due >= g.opts.Duration {
				return
			}
			deadline = g.start.Add(due + g.opts.Timeout)
		}
		o, canceled := g.do(ctx, tg, deadline)
		if canceled {
			g.rec.cancel()
			return
		}
		o.at = due
		o.done = time.Since(g.start)
		o.latency = o.done - due
		g.rec.record(o)
	}
}

// do sends one request and reads the whole response. canceled reports that
// ctx, not the request's own deadline, ended it.
func (g *generator) do(ctx context.Context, tg *target, deadline time.Time) (o outcome, canceled bool) {
	rctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	conns := 0
	rctx = httptrace.WithClientTrace(rctx, &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { conns++ }})
	req, err := http.NewRequestWithContext(rctx, g.opts.Method, tg.url, nil)
	if err != nil {
		return outcome{class: ClassOther}, false
	}
	for k, v := range g.opts.Header {
		req.Header[k] = v
	}
	resp, err := tg.transport.RoundTrip(req)
	if err == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		o.status = resp.StatusCode
	}
	o.retries = max(conns-1, 0)
	switch {
	case err != nil && ctx.Err() != nil:
		return o, true
	case err != nil:
		o.class = classify(err)
	case o.retries > 0 && !g.opts.AllowRetry:
		o.class = ClassRetried
	case o.status < 200 || o.status > 299:
		o.class = ClassStatus
	}
	return o, false
}
