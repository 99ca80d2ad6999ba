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

	"github.com/lodis/lodis/app"
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

// handlers are the worker's own endpoints; the health path is app's.
type handlers struct {
	cfg       *Config
	app       *app.App
	started   time.Time
	port      string
	listeners []string
	activated bool
	hang      atomic.Bool // test hook: /__/health stalls while set
}

func (h *handlers) mux() http.Handler {
	m := http.NewServeMux()
	m.HandleFunc("GET /{$}", h.index)
	m.HandleFunc("GET /__/time", h.time)
	m.HandleFunc("GET /__/info", h.info)
	return m
}

var page = template.Must(template.New("index").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>lodis :{{.Port}}</title></head>
<body><h1>lodis on port {{.Port}}</h1>
<p>The time is {{.Time}}.</p>
<p>Worker pid {{.PID}}, version {{.Version}}, up {{.Uptime}}, {{.Requests}} requests served.</p>
<p><a href="/__/time">/__/time</a> · <a href="{{.HealthPath}}">{{.HealthPath}}</a> · <a href="/__/info">/__/info</a></p>
</body></html>
`))

// index shows the counters only, never the hash: the first response after an
// activation must not wait for it.
func (h *handlers) index(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	page.Execute(w, map[string]any{
		"Port": h.port, "Time": time.Now().Format(time.RFC3339), "PID": os.Getpid(), "Version": buildinfo.Version,
		"Uptime": time.Since(h.started).Round(time.Second), "Requests": h.app.Stats().Requests,
		"HealthPath": h.app.HealthPath(),
	})
}

func (h *handlers) time(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, time.Now().UTC().Format(time.RFC3339Nano))
}

func (h *handlers) info(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, Info{
		Report: h.app.Health(), GoVersion: runtime.Version(), Listeners: h.listeners,
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
