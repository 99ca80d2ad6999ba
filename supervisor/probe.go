package supervisor

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// Health is the part of a worker's /__/health answer the supervisor keeps.
type Health struct {
	PID           int     `json:"pid"`
	Version       string  `json:"version"`
	SHA256        string  `json:"sha256"`
	UptimeSeconds float64 `json:"uptime_seconds"`
	Requests      uint64  `json:"requests"`
	OpenConns     int64   `json:"open_conns"`
}

// Prober fetches /__/health from workers. Connections are never kept alive:
// an idle keep-alive connection would stop the worker from exiting when idle.
type Prober struct {
	client *http.Client
}

// NewProber returns a Prober whose requests give up after timeout.
func NewProber(timeout time.Duration) *Prober {
	return &Prober{client: &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DisableKeepAlives:   true,
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: timeout}).DialContext,
			MaxIdleConnsPerHost: -1,
		},
	}}
}

// Probe asks the worker behind addr (host:port) for its health. Any answer
// other than 200 with a JSON body naming a pid is an error.
func (p *Prober) Probe(ctx context.Context, addr string) (Health, time.Duration, error) {
	start := time.Now()
	var h Health
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/__/health", nil)
	if err != nil {
		return h, 0, err
	}
	req.Header.Set("User-Agent", "lodis-supervisor")
	resp, err := p.client.Do(req)
	if err != nil {
		return h, time.Since(start), fmt.Errorf("health probe: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	took := time.Since(start)
	if err != nil {
		return h, took, fmt.Errorf("health probe: read answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return h, took, fmt.Errorf("health probe: %s", resp.Status)
	}
	if err := json.Unmarshal(b, &h); err != nil || h.PID == 0 {
		return h, took, fmt.Errorf("health probe: answer is not lodis health JSON")
	}
	return h, took, nil
}

// probeAddr turns a socket's listen address into one to connect to: a
// wildcard host ([::], 0.0.0.0, none) becomes 127.0.0.1.
func probeAddr(listen, port string) string {
	host, p, err := net.SplitHostPort(listen)
	if err != nil {
		return net.JoinHostPort("127.0.0.1", port)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, p)
}
