package metrics

import (
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/lodis/lodis/internal/events"
)

// Families returns the name and type ("counter", "gauge", "histogram") of
// every metric family the supervisor exports, the process collector's
// included: what the docs, the alerting rules and the dashboard may name.
func Families() (map[string]string, error) {
	m := New()
	// One series of each family, so that every one is gathered.
	m.WatchPort("1")
	m.SetUnitStates("1", "active", "active")
	m.SetWorkerRelease("1", true, "", "")
	m.ObserveProbe("1", "ok", 0)
	m.ObserveActivation("1", 0)
	m.AddAppRequests("1", 1)
	m.SetConns("1", 0, []Listener{{Addr: "x"}})
	m.SetReleases([]Release{{State: "active"}})
	m.CountRollout("upgrade", "done", 0)
	m.CountEvent(events.Event{Kind: "x"})
	m.CountHook("ok")
	fams, err := m.Registry.Gather()
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, f := range fams {
		out[f.GetName()] = strings.ToLower(f.GetType().String())
	}
	return out, nil
}

// Text returns the metrics in Prometheus's text exposition format, as GET
// /metrics serves them: for tests and for a look without a scraper.
func (m *Metrics) Text() string {
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	return rec.Body.String()
}
