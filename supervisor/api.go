package supervisor

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
)

// DefaultSocket is where the status API listens for the system manager.
const DefaultSocket = "/run/lodis/supervisor.sock"

// UserSocket is where the status API listens for the user manager:
// $XDG_RUNTIME_DIR/lodis/supervisor.sock.
func UserSocket() string {
	return filepath.Join(os.Getenv("XDG_RUNTIME_DIR"), "lodis", "supervisor.sock")
}

// Snapshot is the body of GET /v1/instances.
type Snapshot struct {
	Connected bool             `json:"connected"`     // the supervisor reaches systemd now
	Bus       string           `json:"bus,omitempty"` // where
	Since     time.Time        `json:"since"`         // when the supervisor started
	PID       int              `json:"pid"`
	Version   string           `json:"version"`
	SHA256    string           `json:"sha256,omitempty"` // of the supervisor's own binary
	Instances []InstanceStatus `json:"instances"`
	// Rollout is the roll-out under way, or the last one; nil when none is
	// known (or no extension drives roll-outs).
	Rollout *RolloutStatus `json:"rollout,omitempty"`
}

// RolloutStatus is the roll-out line of the status: which release goes
// where, the phase, and how many running workers have moved.
type RolloutStatus struct {
	ID          string    `json:"id"`
	Kind        string    `json:"kind"` // upgrade or rollback
	From        string    `json:"from"` // sha256
	To          string    `json:"to"`   // sha256
	FromVersion string    `json:"from_version,omitempty"`
	ToVersion   string    `json:"to_version,omitempty"`
	Phase       string    `json:"phase"`   // pending, rolling, supervisor, done, rolling-back, rolled-back, failed
	Running     bool      `json:"running"` // false once it has ended
	Moved       int       `json:"moved"`   // workers verified on To
	Total       int       `json:"total"`   // workers planned
	Current     string    `json:"current,omitempty"`
	Reason      string    `json:"reason,omitempty"`
	Started     time.Time `json:"started"`
	Finished    time.Time `json:"finished,omitzero"`
}

// InstanceStatus is one lodis instance (a port) as the supervisor sees it.
type InstanceStatus struct {
	Port          string       `json:"port"`
	Socket        string       `json:"socket"` // "active/listening", "failed/failed", …
	SocketResult  string       `json:"socket_result,omitempty"`
	Worker        string       `json:"worker"` // "active/running", "inactive/dead", …
	WorkerResult  string       `json:"worker_result,omitempty"`
	PID           uint32       `json:"pid,omitempty"`
	Version       string       `json:"version,omitempty"` // from the last health probe of this pid
	SHA256        string       `json:"sha256,omitempty"`
	UptimeSeconds float64      `json:"uptime_seconds,omitempty"`
	Restarts      int          `json:"restarts"` // worker failures seen plus hung-worker restarts
	Health        *ProbeStatus `json:"health,omitempty"`
}

// ProbeStatus is the outcome of the last health probe of an instance.
type ProbeStatus struct {
	OK        bool      `json:"ok"`
	Error     string    `json:"error,omitempty"`
	At        time.Time `json:"at"`
	LatencyMS float64   `json:"latency_ms"`
	Failures  int       `json:"failures"` // in a row
}

// API is the status API: an HTTP server on a unix socket serving
// GET /v1/instances, GET /v1/events[?since=SEQ] and GET /metrics. Other
// packages add their own endpoints with Handle before Serve, e.g.
// api.Handle("POST /v1/rollout", h).
type API struct {
	Sup     *Supervisor
	Events  *Events
	Metrics *Metrics
	Log     logrus.FieldLogger
	Version string // of the supervisor's binary, shown in the snapshot
	SHA256  string // of the supervisor's binary, shown in the snapshot
	// Rollout, if set (by the extension that drives roll-outs), tells the
	// roll-out line of GET /v1/instances.
	Rollout func(ctx context.Context) *RolloutStatus
	mux     *http.ServeMux
}

// Handle registers an extra handler (net/http ServeMux pattern syntax).
func (a *API) Handle(pattern string, h http.Handler) {
	a.init()
	a.mux.Handle(pattern, h)
}

func (a *API) init() {
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
func (a *API) Handler() http.Handler {
	a.init()
	return a.mux
}

func (a *API) instances(w http.ResponseWriter, r *http.Request) {
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

func (a *API) events(w http.ResponseWriter, r *http.Request) {
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
		ev = []Event{}
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
func (a *API) Serve(ctx context.Context, l net.Listener) error {
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
