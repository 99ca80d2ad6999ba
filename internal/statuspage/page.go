// Package statuspage is the supervisor's status page: one HTML page, read
// only, with every port (socket, worker, the release it runs, health,
// restarts), the roll-out under way or the last one with its steps, and the
// last events. It is rendered on the server (html/template), carries its
// style inline and loads nothing else (its Content-Security-Policy forbids
// it), and refreshes itself every Refresh (a meta refresh: no script).
//
// The status API serves it at GET / of the unix socket, and
// lodis-metrics.socket over TCP; docs/metrics.md shows it.
package statuspage

import (
	"bytes"
	"context"
	_ "embed"
	"fmt"
	"html/template"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/lodis/lodis/internal/buildinfo"
	"github.com/lodis/lodis/internal/events"
	"github.com/lodis/lodis/internal/rollout"
	"github.com/lodis/lodis/internal/statusapi"
)

// Defaults of the zero fields of Page.
const (
	DefaultRefresh = 2 * time.Second
	DefaultEvents  = 25
	// maxSteps bounds the roll-out steps shown (the newest).
	maxSteps = 40
)

// Page serves the status page. Status is required; the rest optional.
type Page struct {
	// Status is the supervisor's status (statusapi.Server.Status); ok
	// false when it does not answer (the page then says so, with 503).
	Status func(ctx context.Context) (statusapi.Snapshot, bool)
	// Events are the supervisor's events; the last Events are shown.
	Events *events.Stream
	// Rollout is the roll-out under way or the last one, with its steps
	// (rollout.Service.State).
	Rollout func() (*rollout.State, error)
	// Refresh is how often the page reloads itself; default DefaultRefresh.
	Refresh time.Duration
	// EventsShown is how many of the last events are shown; default
	// DefaultEvents.
	EventsShown int
	// Host names the machine in the title; default os.Hostname.
	Host string
	// Now tells the time; default time.Now.
	Now func() time.Time
}

//go:embed page.html.tmpl
var pageText string

var tmpl = template.Must(template.New("page").Funcs(template.FuncMap{
	"short": buildinfo.ShortSHA,
	"clock": func(t time.Time) string { return t.Local().Format("15:04:05") },
	"stamp": func(t time.Time) string { return t.Local().Format("2006-01-02 15:04:05 MST") },
	"ago":   ago,
	"ms":    func(f float64) string { return fmt.Sprintf("%.1f ms", f) },
	"secs":  func(f float64) string { return ago(time.Duration(f * float64(time.Second))) },
}).Parse(pageText))

// view is what the template renders.
type view struct {
	Host, Title string
	Refresh     int // seconds
	Now         time.Time
	Up          bool // the supervisor answered
	Snap        statusapi.Snapshot
	Ports       []port
	Rollout     *rollout.State
	Steps       []rollout.Event
	StepsLeft   int // older steps not shown
	Events      []events.Event
}

// port is one line of the ports table.
type port struct {
	statusapi.InstanceStatus
	Class   string // ok, idle, warn or bad: the line's colour
	Note    string // why warn or bad
	Running bool   // a worker runs: its health is shown
}

// ServeHTTP renders the page.
func (p *Page) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	v := p.view(ctx)
	var b bytes.Buffer
	if err := tmpl.Execute(&b, v); err != nil {
		http.Error(w, "status page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	Headers(w.Header())
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if !v.Up {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	w.Write(b.Bytes())
}

// Headers sets what every answer of the page carries: no caching, and a
// policy that lets it load nothing (style inline only, no script, no frame).
func Headers(h http.Header) {
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
}

func (p *Page) view(ctx context.Context) view {
	now := time.Now
	if p.Now != nil {
		now = p.Now
	}
	v := view{Host: p.Host, Now: now(), Refresh: refreshSeconds(p.Refresh)}
	if v.Host == "" {
		v.Host, _ = os.Hostname()
	}
	v.Title = "lodis on " + v.Host
	v.Snap, v.Up = p.Status(ctx)
	for _, in := range v.Snap.Instances {
		v.Ports = append(v.Ports, classify(in))
	}
	if p.Rollout != nil {
		if st, err := p.Rollout(); err == nil && st != nil {
			v.Rollout = st
			steps := slices.Clone(st.Events)
			if n := len(steps); n > maxSteps {
				v.StepsLeft, steps = n-maxSteps, steps[n-maxSteps:]
			}
			slices.Reverse(steps)
			v.Steps = steps
		}
	}
	if p.Events != nil {
		n := p.EventsShown
		if n <= 0 {
			n = DefaultEvents
		}
		ev := p.Events.Since(0)
		if len(ev) > n {
			ev = ev[len(ev)-n:]
		}
		slices.Reverse(ev)
		v.Events = ev
	}
	return v
}

// classify colours a port: bad when it refuses connections or its worker
// failed or fails its health probes, warn while a unit is between states,
// idle while it listens with no worker, ok while a healthy worker runs.
func classify(in statusapi.InstanceStatus) port {
	sock, work := activeOf(in.Socket), activeOf(in.Worker)
	p := port{InstanceStatus: in, Class: "ok", Running: work == "active"}
	switch {
	case sock == "failed":
		p.Class, p.Note = "bad", "socket failed ("+in.SocketResult+"): the port refuses connections"
	case sock != "active":
		p.Class, p.Note = "bad", "socket "+in.Socket+": the port refuses connections"
	case work == "failed":
		p.Class, p.Note = "bad", "worker failed ("+in.WorkerResult+")"
	case in.Health != nil && !in.Health.OK && work == "active":
		p.Class, p.Note = "bad", fmt.Sprintf("health probe failing (%d in a row): %s", in.Health.Failures, in.Health.Error)
	case work == "activating" || work == "deactivating" || sock == "activating" || sock == "deactivating":
		p.Class, p.Note = "warn", "changing state"
	case work != "active":
		p.Class = "idle"
	}
	return p
}

func activeOf(state string) string {
	a, _, _ := strings.Cut(state, "/")
	return a
}

func refreshSeconds(d time.Duration) int {
	if d <= 0 {
		d = DefaultRefresh
	}
	return max(int(d.Round(time.Second)/time.Second), 1)
}

// ago writes a duration the way a person reads it: 850ms, 12s, 3m20s, 2h5m.
func ago(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	default:
		return strings.TrimSuffix(d.Round(time.Minute).String(), "0s")
	}
}
