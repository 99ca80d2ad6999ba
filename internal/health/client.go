package health

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// DefaultTimeout bounds one check when Client.Timeout is zero.
const DefaultTimeout = 2 * time.Second

// maxBody bounds how much of an answer is read.
const maxBody = 64 << 10

// Client fetches health reports. Connections are never kept alive: an idle
// keep-alive connection would keep a worker from exiting when idle. The zero
// value is usable; a Client is safe for concurrent use.
type Client struct {
	// Timeout bounds one check, connecting included; default DefaultTimeout.
	Timeout time.Duration
	// UserAgent is sent with every check; default "lodis".
	UserAgent string

	once sync.Once
	http *http.Client
}

// StatusError is an answer other than 2xx: a definite "unhealthy", as
// opposed to a worker that could not be reached.
type StatusError struct {
	Status string // e.g. "503 Service Unavailable"
	Body   string // the start of the answer's body
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s answered %s: %s", Path, e.Status, e.Body)
}

// SyntaxError is a 2xx answer whose body is not a health report: healthy by
// the app contract (which asks only for 2xx), with nothing more to say.
type SyntaxError struct{ Err error }

func (e *SyntaxError) Error() string { return "health answer: not JSON: " + e.Err.Error() }
func (e *SyntaxError) Unwrap() error { return e.Err }

// Get checks the worker behind a socket that listens on listen (as systemd
// reports it: "[::]:8080", "127.0.0.1:8080", "" when unknown) for port, on
// path ("" for Path). It returns the report, how long the check took, and an error for no
// answer, an answer other than 2xx (a *StatusError) or a 2xx body that is
// not a JSON object (a *SyntaxError).
func (c *Client) Get(ctx context.Context, listen, port, path string) (Report, time.Duration, error) {
	if path == "" {
		path = Path
	}
	return c.GetURL(ctx, "http://"+DialAddr(listen, port)+path)
}

// GetURL is Get for a full URL.
func (c *Client) GetURL(ctx context.Context, url string) (Report, time.Duration, error) {
	c.once.Do(func() {
		c.http = &http.Client{Timeout: c.timeout(), Transport: &http.Transport{
			DisableKeepAlives:   true,
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: c.timeout()}).DialContext,
			MaxIdleConnsPerHost: -1,
		}}
	})
	return c.do(ctx, c.http, url)
}

// GetHeld is Get over a connection of its own whose server end inspect
// sees first: inspect runs once the connection is established, before the
// request is sent, with the connection's local and remote addresses, so that
// the process holding the server end still holds it (a server that closes
// after its answer, as HTTP/1.0 ones do, has not answered yet). An error from
// inspect ends the check: the connection is closed, the request never sent,
// and the error returned as it is.
func (c *Client) GetHeld(ctx context.Context, listen, port, path string, inspect func(local, remote net.Addr) error) (Report, time.Duration, error) {
	if path == "" {
		path = Path
	}
	var inspectErr error
	dialer := &net.Dialer{Timeout: c.timeout()}
	tr := &http.Transport{Proxy: nil, DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			cn, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			if err := inspect(cn.LocalAddr(), cn.RemoteAddr()); err != nil {
				cn.Close()
				inspectErr = err
				return nil, err
			}
			return cn, nil
		}}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Timeout: c.timeout(), Transport: tr}
	r, took, err := c.do(ctx, hc, "http://"+DialAddr(listen, port)+path)
	if inspectErr != nil {
		return r, took, inspectErr
	}
	return r, took, err
}

func (c *Client) timeout() time.Duration {
	if c.Timeout <= 0 {
		return DefaultTimeout
	}
	return c.Timeout
}

// do sends one check with hc.
func (c *Client) do(ctx context.Context, hc *http.Client, url string) (Report, time.Duration, error) {
	var r Report
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return r, 0, err
	}
	ua := c.UserAgent
	if ua == "" {
		ua = "lodis"
	}
	req.Header.Set("User-Agent", ua)
	resp, err := hc.Do(req)
	if err != nil {
		return r, time.Since(start), fmt.Errorf("health check: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	took := time.Since(start)
	if err != nil {
		return r, took, fmt.Errorf("health check: read answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		return r, took, &StatusError{Status: resp.Status, Body: trim(b)}
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return Report{}, took, &SyntaxError{Err: err}
	}
	return r, took, nil
}

// DialAddr turns a socket's listen address into one to connect to: a
// wildcard host ([::], 0.0.0.0, none) becomes 127.0.0.1; any other host is
// dialled as it is. An unparsable or empty listen address gives
// 127.0.0.1:port.
func DialAddr(listen, port string) string {
	host, p, err := net.SplitHostPort(listen)
	if err != nil {
		return net.JoinHostPort("127.0.0.1", port)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, p)
}

func trim(b []byte) string {
	if len(b) > 200 {
		b = b[:200]
	}
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return string(b)
}
