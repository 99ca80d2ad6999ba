package supervisor

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are the supervisor's Prometheus metrics, in a registry of their
// own (plus the process collector: process_resident_memory_bytes, …),
// served at GET /metrics:
//
//	lodis_instances{socket,worker}               instances by ActiveState of socket and worker
//	lodis_remedies_total{kind,result}            remedies by kind (recover-socket, reset-failed, restart) and result
//	lodis_health_probe_duration_seconds{kind,result}  health-probe latency (kind running or wake)
//	lodis_events_total{kind}                     events emitted
//	lodis_hook_runs_total{outcome}               --on-event runs: ok, failed, timeout, dropped
//	lodis_bus_connected                          1 while systemd's D-Bus is reached
//	lodis_rollouts_total{kind,outcome}           roll-outs driven here: kind upgrade or rollback, outcome done, rolled-back, failed
type Metrics struct {
	Registry     *prometheus.Registry
	instances    *prometheus.GaugeVec
	remedies     *prometheus.CounterVec
	probeLatency *prometheus.HistogramVec
	events       *prometheus.CounterVec
	hookRuns     *prometheus.CounterVec
	busConnected prometheus.Gauge
	rollouts     *prometheus.CounterVec
}

// NewMetrics creates and registers the metrics.
func NewMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		instances: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "lodis_instances",
			Help: "lodis instances by ActiveState of their socket and worker."}, []string{"socket", "worker"}),
		remedies: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lodis_remedies_total",
			Help: "Remedies applied by the supervisor, by kind and result."}, []string{"kind", "result"}),
		probeLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "lodis_health_probe_duration_seconds",
			Help:    "Latency of health probes (running workers, and wake probes of idle ports).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}}, []string{"kind", "result"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lodis_events_total",
			Help: "Events emitted, by kind."}, []string{"kind"}),
		hookRuns: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lodis_hook_runs_total",
			Help: "Runs of the --on-event hook, by outcome."}, []string{"outcome"}),
		busConnected: prometheus.NewGauge(prometheus.GaugeOpts{Name: "lodis_bus_connected",
			Help: "1 while the supervisor is connected to systemd's D-Bus API."}),
		rollouts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lodis_rollouts_total",
			Help: "Roll-outs driven by the supervisor, by kind and outcome."}, []string{"kind", "outcome"}),
	}
	// The process collector (RSS, CPU, fds) but not the Go collector: its
	// runtime/metrics descriptions cost memory the supervisor keeps small.
	m.Registry.MustRegister(m.instances, m.remedies, m.probeLatency, m.events, m.hookRuns, m.busConnected, m.rollouts,
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// CountEvent counts e; subscribe it to the Events.
func (m *Metrics) CountEvent(e Event) { m.events.WithLabelValues(e.Kind).Inc() }

// CountRollout counts one roll-out that ended: kind upgrade or rollback,
// outcome done, rolled-back or failed.
func (m *Metrics) CountRollout(kind, outcome string) { m.rollouts.WithLabelValues(kind, outcome).Inc() }

// CountHook counts one hook outcome.
func (m *Metrics) CountHook(outcome string) { m.hookRuns.WithLabelValues(outcome).Inc() }
