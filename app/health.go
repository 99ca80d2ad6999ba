package app

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"time"
)

// Health is the JSON body of an app's health answer, read by the lodis
// supervisor and shown by `lodis status` (version, requests, open
// connections). It is optional: any 2xx answer is healthy, and which
// release a worker runs is read from its process, not from this body. An
// app in another language sends the fields it can in this shape; the
// others stay empty. Serve fills every field.
type Health struct {
	Status        string  `json:"status"`           // "ok", or "unhealthy" with a 503
	Reason        string  `json:"reason,omitempty"` // why unhealthy: the error Options.Health returned
	Name          string  `json:"name,omitempty"`
	PID           int     `json:"pid"`
	Version       string  `json:"version"`
	Commit        string  `json:"commit,omitempty"`
	SHA256        string  `json:"sha256"` // hex SHA-256 of the running executable
	Port          string  `json:"port,omitempty"`
	UptimeSeconds float64 `json:"uptime_seconds"`
	Requests      uint64  `json:"requests"`          // requests started since Serve began
	OpenConns     int64   `json:"open_conns"`        // connections open now
	Started       string  `json:"started,omitempty"` // RFC 3339, UTC
}

// Uptime is UptimeSeconds as a duration.
func (h Health) Uptime() time.Duration {
	return time.Duration(h.UptimeSeconds * float64(time.Second))
}

// SHA256 returns the hex SHA-256 of the running executable, /proc/self/exe:
// the file the process was started from, even if its path has since been
// replaced or removed. It is computed once per process and cached; New starts
// the computation in the background, so that the first request after an
// activation does not wait for it.
func SHA256() (string, error) { return selfSum() }

var selfSum = sync.OnceValues(func() (string, error) {
	f, err := os.Open("/proc/self/exe")
	if err != nil {
		exe, eerr := os.Executable()
		if eerr != nil {
			return "", fmt.Errorf("hash executable: %w", err)
		}
		if f, err = os.Open(exe); err != nil {
			return "", fmt.Errorf("hash executable: %w", err)
		}
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hash executable: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
})

// serveHealth answers the health path: GET and HEAD only, a compact JSON
// Health, 503 when the app's own check fails.
func (a *App) serveHealth(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	code := http.StatusOK
	var reason string
	if a.cfg.Health != nil {
		if err := a.cfg.Health(r.Context()); err != nil {
			code, reason = http.StatusServiceUnavailable, err.Error()
		}
	}
	h := a.Health()
	if code != http.StatusOK {
		h.Status, h.Reason = "unhealthy", reason
	}
	b, _ := json.Marshal(h)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}
