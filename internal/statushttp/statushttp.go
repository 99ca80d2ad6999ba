// Package statushttp is the read-only TCP front of the supervisor's status
// API: `lodis metrics-proxy`, which lodis-metrics.service runs on the socket
// lodis-metrics.socket passes it (127.0.0.1:9187 by default). It answers GET
// and HEAD of /metrics (the supervisor's Prometheus metrics) and / (the
// status page, package statuspage) by asking the supervisor on its unix
// socket, and nothing else: no /v1 route, no other method. Over TCP there is
// no peer credential to decide by (SO_PEERCRED is a unix socket's), so what
// it forwards is what anyone who reaches the port may read.
//
// When the supervisor does not answer, /metrics is 503 (Prometheus records
// the scrape as failed: up is 0) and / is the status page saying so.
// Upstream requests are bounded in number (MaxInFlight) and time (Timeout),
// so a flood on the TCP port cannot pile work on the supervisor.
package statushttp

import (
	"context"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/lodis/lodis/internal/statusapi"
	"github.com/lodis/lodis/internal/statuspage"
)

// Defaults of the zero fields of Front.
const (
	DefaultTimeout     = 10 * time.Second
	DefaultQueue       = time.Second
	DefaultMaxInFlight = 4
)

// Routes are the paths Front serves, each for GET and HEAD only.
var Routes = []string{"/metrics", "/"}

// Front forwards the read-only routes to the status API. Set Socket, then
// use Handler.
type Front struct {
	// Socket is the status API's unix socket; default
	// statusapi.DefaultSocket.
	Socket string
	// Timeout bounds one request to the supervisor; default
	// DefaultTimeout.
	Timeout time.Duration
	// MaxInFlight is how many requests may wait on the supervisor at once;
	// default DefaultMaxInFlight. A request that finds none free within
	// Queue (default DefaultQueue) gets 503 with Retry-After.
	MaxInFlight int
	Queue       time.Duration
	// Log receives what goes wrong (the supervisor unreachable), at most
	// once a minute; default: discard.
	Log logrus.FieldLogger
}

// Handler returns the front's handler.
func (f *Front) Handler() http.Handler {
	socket := f.Socket
	if socket == "" {
		socket = statusapi.DefaultSocket
	}
	timeout := f.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	slots := f.MaxInFlight
	if slots <= 0 {
		slots = DefaultMaxInFlight
	}
	queue := f.Queue
	if queue <= 0 {
		queue = DefaultQueue
	}
	sem := make(chan struct{}, slots)
	var (
		logMu   sync.Mutex
		lastLog time.Time
	)
	proxy := &httputil.ReverseProxy{
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "unix", socket)
			},
			Proxy:           nil,
			MaxIdleConns:    slots,
			IdleConnTimeout: 20 * time.Second, // below the status API's 30 s
		},
		Rewrite: func(pr *httputil.ProxyRequest) {
			in := pr.In
			pr.Out.URL = &url.URL{Scheme: "http", Host: "supervisor", Path: in.URL.Path}
			pr.Out.Host = "supervisor"
			pr.Out.Header = http.Header{}
			for _, h := range []string{"Accept", "Accept-Encoding"} {
				if v := in.Header.Values(h); len(v) > 0 {
					pr.Out.Header[h] = v
				}
			}
			pr.Out.Header.Set("User-Agent", "lodis-metrics-proxy")
			pr.Out.Body, pr.Out.ContentLength = http.NoBody, 0
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			logMu.Lock()
			if f.Log != nil && time.Since(lastLog) > time.Minute {
				lastLog = time.Now()
				f.Log.WithError(err).Warn("the supervisor's status API does not answer (logged once a minute)")
			}
			logMu.Unlock()
			unreachable(w, r)
		},
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" && r.URL.Path != "/" {
			http.Error(w, "not found: this port serves GET /metrics and GET / only", http.StatusNotFound)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed: this port is read-only", http.StatusMethodNotAllowed)
			return
		}
		wait := time.NewTimer(queue)
		defer wait.Stop()
		select {
		case sem <- struct{}{}:
			defer func() { <-sem }()
		case <-wait.C:
			w.Header().Set("Retry-After", "1")
			http.Error(w, "busy: too many requests wait on the supervisor", http.StatusServiceUnavailable)
			return
		case <-r.Context().Done():
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		proxy.ServeHTTP(w, r.WithContext(ctx))
	})
}

// unreachable answers a request the supervisor could not: the status page
// saying so, or a plain 503 for /metrics.
func unreachable(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/" {
		(&statuspage.Page{Status: func(context.Context) (statusapi.Snapshot, bool) {
			return statusapi.Snapshot{}, false
		}}).ServeHTTP(w, r)
		return
	}
	http.Error(w, "the lodis supervisor does not answer on its status socket", http.StatusServiceUnavailable)
}
