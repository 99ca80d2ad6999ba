package worker

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/lodis/lodis/internal/buildinfo"
	"github.com/lodis/lodis/internal/cli"
	"github.com/lodis/lodis/internal/logging"
)

// Selftest is `lodis selftest`: it proves that this binary can serve. It binds
// an ephemeral loopback port (127.0.0.1:0), serves the worker's endpoints on it
// with the same code as `lodis serve`, fetches /__/health, and checks that the
// answer is "ok" and names this binary's version and SHA-256. It then drains
// and exits 0, or prints one line saying what failed and exits 1. The whole
// run is bounded by -timeout (default 10 s). It needs no systemd; the upgrade
// validation runs it inside a sandbox before any release is switched to.
func Selftest(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("lodis selftest", flag.ContinueOnError)
	timeout := fs.Duration("timeout", 10*time.Second, "give up after this long")
	if err := cli.Parse(fs, args, "lodis selftest [-timeout 10s]", stderr); err != nil {
		return cli.Exit("lodis selftest", err, stderr)
	}
	if *timeout <= 0 {
		fmt.Fprintf(stderr, "lodis selftest: bad -timeout %v: must be positive\n", *timeout)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	msg, err := selftest(ctx, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "lodis selftest: FAILED: %v\n", err)
		return 1
	}
	fmt.Fprintln(stderr, "lodis selftest: ok:", msg)
	return 0
}

func selftest(ctx context.Context, stderr io.Writer) (string, error) {
	start := time.Now()
	want, err := buildinfo.SHA256()
	if err != nil {
		return "", err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("bind a loopback port: %w", err)
	}
	_, port, _ := net.SplitHostPort(l.Addr().String())
	log, err := logging.New(stderr, "warn", "text")
	if err != nil {
		return "", err
	}
	cfg := &Config{DrainTimeout: 2 * time.Second, IdleGrace: 100 * time.Millisecond, KeepAliveTimeout: 5 * time.Second, Port: port}
	sctx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- Run(sctx, cfg, []net.Listener{l}, false, log) }()

	h, err := fetchHealth(ctx, "http://"+l.Addr().String()+"/__/health")
	stop()
	select {
	case serr := <-served:
		if err == nil && serr != nil {
			err = fmt.Errorf("drain: %w", serr)
		}
	case <-ctx.Done():
		return "", fmt.Errorf("server did not stop: %w", ctx.Err())
	}
	if err != nil {
		return "", err
	}
	switch {
	case h.Status != "ok":
		return "", fmt.Errorf("/__/health status %q, want \"ok\"", h.Status)
	case h.SHA256 != want:
		return "", fmt.Errorf("/__/health reports sha256 %s, this binary is %s", h.SHA256, want)
	case h.Version != buildinfo.Version:
		return "", fmt.Errorf("/__/health reports version %q, this binary is %q", h.Version, buildinfo.Version)
	case h.Port != port:
		return "", fmt.Errorf("/__/health reports port %q, served on %q", h.Port, port)
	}
	if buildinfo.TestFault == buildinfo.FaultSelftestFails {
		return "", errors.New("test fault selftest-fails")
	}
	return fmt.Sprintf("version %s, sha256 %s, served /__/health on 127.0.0.1:%s in %s",
		h.Version, h.SHA256[:min(12, len(h.SHA256))], port, time.Since(start).Round(time.Millisecond)), nil
}

func fetchHealth(ctx context.Context, url string) (*Health, error) {
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET /__/health: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /__/health: %s", resp.Status)
	}
	var h Health
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		return nil, fmt.Errorf("GET /__/health: bad JSON: %w", err)
	}
	return &h, nil
}
