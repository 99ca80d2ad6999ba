// Package statusapi is the supervisor's status API: an HTTP server on a
// unix socket (Server), the client lodis commands use to reach it (Client),
// and the JSON types it answers with (Snapshot and its parts). The routes
// are documented in docs/supervisor.md; other facilities (the roll-out) add
// routes of their own with Server.Handle.
package statusapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sirupsen/logrus"

	"github.com/lodis/lodis/internal/events"
	"github.com/lodis/lodis/internal/metrics"
)

// DefaultSocket is where the status API listens for the system manager.
const DefaultSocket = "/run/lodis/supervisor.sock"

// UserSocket is where the status API listens for the user manager:
// $XDG_RUNTIME_DIR/lodis/supervisor.sock.
func UserSocket() string {
	return filepath.Join(os.Getenv("XDG_RUNTIME_DIR"), "lodis", "supervisor.sock")
}

// Snapshotter is what the Server reads the instances from: the supervisor's
// state machine. ok is false when it does not answer before ctx ends.
type Snapshotter interface {
	Snapshot(ctx context.Context) (snap Snapshot, ok bool)
}

// Server is the status API: GET /v1/instances, GET /v1/events[?since=SEQ]
// and GET /metrics, plus the routes added with Handle before Serve.
type Server struct {
	Sup     Snapshotter
	Events  *events.Stream
	Metrics *metrics.Metrics
	Log     logrus.FieldLogger
	Version string // of the supervisor's binary, shown in the snapshot
	SHA256  string // of the supervisor's binary, shown in the snapshot
	// Rollout, if set (by the extension that drives roll-outs), tells the
	// roll-out line of GET /v1/instances.
	Rollout func(ctx context.Context) *RolloutStatus
	mux     *http.ServeMux
}

// Handle registers an extra handler (net/http ServeMux pattern syntax).
func (a *Server) Handle(pattern string, h http.Handler) {
	a.init()
	a.mux.Handle(pattern, h)
}

func (a *Server) init() {
	if a.mux != nil {
		return
	}
	a.mux = http.NewServeMux()
	a.mux.HandleFunc("GET /v1/instances", a.instances)
	a.mux.HandleFunc("GET /v1/events", a.events)
	if a.Metrics != nil {
		a.mux.Handle("GET /metrics", promhttp.HandlerFor(a.Metrics.Registry, promhttp.HandlerOpts{}))
	}
}

// Handler returns the API's routes.
func (a *Server) Handler() http.Handler {
	a.init()
	return a.mux
}

func (a *Server) instances(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	snap, ok := a.Sup.Snapshot(ctx)
	if !ok {
		http.Error(w, "supervisor busy or stopping", http.StatusServiceUnavailable)
		return
	}
	snap.PID, snap.Version, snap.SHA256 = os.Getpid(), a.Version, a.SHA256
	if a.Rollout != nil {
		snap.Rollout = a.Rollout(ctx)
	}
	writeJSON(w, snap)
}

func (a *Server) events(w http.ResponseWriter, r *http.Request) {
	var since uint64
	if v := r.URL.Query().Get("since"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			http.Error(w, fmt.Sprintf("bad since=%q: want an event sequence number", v), http.StatusBadRequest)
			return
		}
		since = n
	}
	ev := a.Events.Since(since)
	if ev == nil {
		ev = []events.Event{}
	}
	writeJSON(w, ev)
}

// WriteJSON writes v as indented JSON, the format of every API answer.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeJSON(w http.ResponseWriter, v any) { WriteJSON(w, http.StatusOK, v) }

// ListenUnix listens on path for the API: a stale socket file is replaced
// (only if nothing answers on it), the file gets mode 0660 and, when group is
// not "", that group (running as root; a member may pass its own group).
func ListenUnix(path, group string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("status socket %s: %w", path, err)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("status socket %s: another supervisor is answering on it", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("status socket %s: remove stale socket: %w", path, err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("status socket: %w", err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		l.Close()
		return nil, fmt.Errorf("status socket %s: %w", path, err)
	}
	if group != "" {
		g, err := user.LookupGroup(group)
		if err != nil {
			l.Close()
			return nil, fmt.Errorf("status socket %s: group %q: %w", path, group, err)
		}
		gid, _ := strconv.Atoi(g.Gid)
		var st syscall.Stat_t
		if err := syscall.Stat(path, &st); err == nil && int(st.Gid) == gid {
			return l, nil // created with that group already (the service runs as it)
		}
		if err := os.Chown(path, -1, gid); err != nil {
			l.Close()
			return nil, fmt.Errorf("status socket %s: chown to group %s: %w", path, group, err)
		}
	}
	return l, nil
}

// Serve serves the API on l until ctx is cancelled.
func (a *Server) Serve(ctx context.Context, l net.Listener) error {
	hs := &http.Server{Handler: a.Handler(), ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 30 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		hs.Shutdown(sctx)
	}()
	if err := hs.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("status API: %w", err)
	}
	return nil
}
