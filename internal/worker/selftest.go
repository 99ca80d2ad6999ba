package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/lodis/lodis/internal/buildinfo"
	"github.com/lodis/lodis/internal/health"
	"github.com/lodis/lodis/internal/logging"
)

// Selftest proves that this binary can serve: it binds an ephemeral
// loopback port (127.0.0.1:0), serves the worker's endpoints on it with the
// same code as `lodis serve`, fetches the health report, and checks that it
// is "ok" and names this binary's version and SHA-256. It then drains and
// returns a one-line account, or an error saying what failed. Warnings go to
// stderr. It needs no systemd; `lodis selftest` runs it.
func Selftest(ctx context.Context, stderr io.Writer) (string, error) {
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
	cfg := &Config{DrainTimeout: 2 * time.Second, IdleGrace: 100 * time.Millisecond, KeepAliveTimeout: 5 * time.Second, Port: port, HealthPath: health.Path}
	sctx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- Run(sctx, cfg, []net.Listener{l}, false, log) }()

	h, _, err := (&health.Client{Timeout: time.Until(deadline(ctx))}).Get(ctx, l.Addr().String(), port, "")
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

// deadline is ctx's deadline, or 10 s from now when it has none.
func deadline(ctx context.Context) time.Time {
	if d, ok := ctx.Deadline(); ok {
		return d
	}
	return time.Now().Add(10 * time.Second)
}
