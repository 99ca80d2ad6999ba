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
	// Rollout, if set (by the roll-out service), tells the roll-out line of
	// GET /v1/instances.
	Rollout func(ctx context.Context) *RolloutStatus
	// Holder, if set, takes holds of the worker remedies (POST and DELETE
	// /v1/hold, for admins).
	Holder Holder
	// ReadGroup's members and ReadUser may read; default "lodis" for both.
	ReadGroup, ReadUser string
	// AdminGroup's members may change state, as root may; "" (the
	// default): root alone.
	AdminGroup string

	mux *http.ServeMux
}

// Holder holds the supervisor's worker remedies while root moves workers
// on purpose; *supervisor.Supervisor implements it.
type Holder interface {
	// HoldWorkersFor holds them for who until ttl has passed or the hold
	// is released (release: ttl 0).
	HoldWorkersFor(ctx context.Context, who string, ttl time.Duration) error
}

// HoldRequest is the body of POST /v1/hold.
type HoldRequest struct {
	Who     string `json:"who"`
	Seconds int    `json:"seconds"` // 1 to 600
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
	a.mux.HandleFunc("POST /v1/hold", a.hold)
	a.mux.HandleFunc("DELETE /v1/hold", a.hold)
	if a.Metrics != nil {
		a.mux.Handle("GET /metrics", promhttp.HandlerFor(a.Metrics.Registry, promhttp.HandlerOpts{}))
	}
}

// Handler returns the API's routes, each refused (403) to a peer who may
// not read.
func (a *Server) Handler() http.Handler {
	a.init()
	return a.access().guard(a.mux)
}

func (a *Server) access() access {
	rg, ru := a.ReadGroup, a.ReadUser
	if rg == "" {
		rg = "lodis"
	}
	if ru == "" {
		ru = "lodis"
	}
	return access{readGID: lookupGID(rg), readUID: lookupUID(ru), adminGID: lookupGID(a.AdminGroup)}
}

// hold takes (POST) or releases (DELETE) a hold of the worker remedies.
func (a *Server) hold(w http.ResponseWriter, r *http.Request) {
	if who, ok := Admin(r); !ok {
		http.Error(w, "holds are for root or the admin group; "+who+" may only read", http.StatusForbidden)
		return
	}
	if a.Holder == nil {
		http.Error(w, "this supervisor takes no holds", http.StatusNotFound)
		return
	}
	req := HoldRequest{}
	if r.Method == http.MethodPost {
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			http.Error(w, "bad hold request: "+err.Error(), http.StatusBadRequest)
			return
		}
		if req.Seconds < 1 || req.Seconds > 600 || req.Who == "" || len(req.Who) > 200 {
			http.Error(w, "bad hold request: want who (1 to 200 characters) and seconds (1 to 600)", http.StatusBadRequest)
			return
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	if err := a.Holder.HoldWorkersFor(ctx, req.Who, time.Duration(req.Seconds)*time.Second); err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *Server) instances(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	snap, ok := a.Status(ctx)
	if !ok {
		http.Error(w, "supervisor busy or stopping", http.StatusServiceUnavailable)
		return
	}
	writeJSON(w, snap)
}

// Status is the body of GET /v1/instances: the supervisor's snapshot with
// its own pid, version and sha256, and the roll-out line. ok is false when
// the supervisor does not answer before ctx ends (busy or stopping).
func (a *Server) Status(ctx context.Context) (snap Snapshot, ok bool) {
	if snap, ok = a.Sup.Snapshot(ctx); !ok {
		return snap, false
	}
	snap.PID, snap.Version, snap.SHA256 = os.Getpid(), a.Version, a.SHA256
	if a.Rollout != nil {
		snap.Rollout = a.Rollout(ctx)
	}
	return snap, true
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
// Each connection's peer is known by its credentials (SO_PEERCRED); a
// request must arrive whole within 10 s, an idle connection is closed after
// 30 s, and headers are bounded to 16 KiB (bodies by each handler).
func (a *Server) Serve(ctx context.Context, l net.Listener) error {
	hs := &http.Server{Handler: a.Handler(), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 30 * time.Second, MaxHeaderBytes: 16 << 10,
		ConnContext: a.access().withCred}
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
