package worker

import (
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"os"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/lodis/lodis/internal/buildinfo"
	"github.com/lodis/lodis/internal/health"
)

// Info is the JSON body of /__/info: Health plus how this worker is configured.
type Info struct {
	health.Report
	GoVersion       string   `json:"go_version"`
	Listeners       []string `json:"listeners"`
	SocketActivated bool     `json:"socket_activated"`
	IdleTimeout     string   `json:"idle_timeout"`
	DrainTimeout    string   `json:"drain_timeout"`
	ChaosAbortRate  float64  `json:"chaos_abort_rate"`
	UID             int      `json:"uid"`
}

type handlers struct {
	cfg       *Config
	started   time.Time
	port      string
	listeners []string
	activated bool
	stats     func() (open int64, requests uint64)
	hang      atomic.Bool // test hook: /__/health stalls while set
}

func (h *handlers) mux() http.Handler {
	m := http.NewServeMux()
	m.HandleFunc("GET /{$}", h.index)
	m.HandleFunc("GET /__/time", h.time)
	m.HandleFunc("GET "+health.Path, h.health)
	m.HandleFunc("GET /__/info", h.info)
	return m
}

var page = template.Must(template.New("index").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>lodis :{{.Port}}</title></head>
<body><h1>lodis on port {{.Port}}</h1>
<p>The time is {{.Time}}.</p>
<p>Worker pid {{.PID}}, version {{.Version}}, up {{.Uptime}}, {{.Requests}} requests served.</p>
<p><a href="/__/time">/__/time</a> · <a href="/__/health">/__/health</a> · <a href="/__/info">/__/info</a></p>
</body></html>
`))

func (h *handlers) index(w http.ResponseWriter, r *http.Request) {
	_, req := h.stats()
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	page.Execute(w, map[string]any{
		"Port": h.port, "Time": time.Now().Format(time.RFC3339), "PID": os.Getpid(),
		"Version": buildinfo.Version, "Uptime": time.Since(h.started).Round(time.Second), "Requests": req,
	})
}

func (h *handlers) time(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, time.Now().UTC().Format(time.RFC3339Nano))
}

func (h *handlers) snapshot() health.Report {
	open, req := h.stats()
	sum, err := buildinfo.SHA256()
	if err != nil {
		sum = ""
	}
	return health.Report{
		Status: "ok", PID: os.Getpid(), Version: buildinfo.Version, Commit: buildinfo.Commit,
		SHA256: sum, Port: h.port, UptimeSeconds: time.Since(h.started).Seconds(),
		Requests: req, OpenConns: open, Started: h.started.UTC().Format(time.RFC3339Nano),
	}
}

func (h *handlers) health(w http.ResponseWriter, r *http.Request) {
	if h.hang.Load() {
		<-r.Context().Done() // test hook: behave like a hung worker
		return
	}
	if h.activated && buildinfo.TestFault == buildinfo.FaultServeUnhealthy {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, `{"status":"unhealthy","reason":"test fault serve-unhealthy"}`)
		return
	}
	writeJSON(w, h.snapshot())
}

func (h *handlers) info(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, Info{
		Report: h.snapshot(), GoVersion: runtime.Version(), Listeners: h.listeners,
		SocketActivated: h.activated, IdleTimeout: h.cfg.IdleTimeout.String(),
		DrainTimeout: h.cfg.DrainTimeout.String(), ChaosAbortRate: h.cfg.ChaosAbortRate, UID: os.Getuid(),
	})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
