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

// StatusError is an answer other than 200: a definite "unhealthy", as
// opposed to a worker that could not be reached.
type StatusError struct {
	Status string // e.g. "503 Service Unavailable"
	Body   string // the start of the answer's body
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s answered %s: %s", Path, e.Status, e.Body)
}

// Get checks the worker behind a socket that listens on listen (as systemd
// reports it: "[::]:8080", "127.0.0.1:8080", "" when unknown) for port. It
// returns the report, how long the check took, and an error for no answer,
// an answer other than 200 (a *StatusError) or a body that is not JSON.
func (c *Client) Get(ctx context.Context, listen, port string) (Report, time.Duration, error) {
	return c.GetURL(ctx, "http://"+DialAddr(listen, port)+Path)
}

// GetURL is Get for a full URL.
func (c *Client) GetURL(ctx context.Context, url string) (Report, time.Duration, error) {
	var r Report
	c.once.Do(func() {
		timeout := c.Timeout
		if timeout <= 0 {
			timeout = DefaultTimeout
		}
		c.http = &http.Client{Timeout: timeout, Transport: &http.Transport{
			DisableKeepAlives:   true,
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: timeout}).DialContext,
			MaxIdleConnsPerHost: -1,
		}}
	})
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
	resp, err := c.http.Do(req)
	if err != nil {
		return r, time.Since(start), fmt.Errorf("health check: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	took := time.Since(start)
	if err != nil {
		return r, took, fmt.Errorf("health check: read answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return r, took, &StatusError{Status: resp.Status, Body: trim(b)}
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, took, fmt.Errorf("health check: bad JSON: %w", err)
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
