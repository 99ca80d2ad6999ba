// Package metrics holds the supervisor's Prometheus metrics, in a registry
// of their own (served at GET /metrics of the status API). The state machine,
// the event stream, the hook and the roll-out report through its methods;
// nothing else touches the collectors.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/lodis/lodis/internal/events"
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

// New creates and registers the metrics.
func New() *Metrics {
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

// CountEvent counts e; subscribe it to the event stream.
func (m *Metrics) CountEvent(e events.Event) { m.events.WithLabelValues(e.Kind).Inc() }

// SetInstances sets lodis_instances: count maps each [socket, worker]
// ActiveState pair to how many instances are in it.
func (m *Metrics) SetInstances(count map[[2]string]int) {
	m.instances.Reset()
	for k, n := range count {
		m.instances.WithLabelValues(k[0], k[1]).Set(float64(n))
	}
}

// CountRemedy counts one remedy of kind with its result (done or failed).
func (m *Metrics) CountRemedy(kind, result string) { m.remedies.WithLabelValues(kind, result).Inc() }

// ObserveProbe records one health probe's latency; kind is running or wake,
// result ok or failed.
func (m *Metrics) ObserveProbe(kind, result string, seconds float64) {
	m.probeLatency.WithLabelValues(kind, result).Observe(seconds)
}

// SetBusConnected sets lodis_bus_connected.
func (m *Metrics) SetBusConnected(up bool) {
	v := 0.0
	if up {
		v = 1
	}
	m.busConnected.Set(v)
}

// CountRollout counts one roll-out that ended: kind upgrade or rollback,
// outcome done, rolled-back or failed.
func (m *Metrics) CountRollout(kind, outcome string) { m.rollouts.WithLabelValues(kind, outcome).Inc() }

// CountHook counts one hook outcome.
func (m *Metrics) CountHook(outcome string) { m.hookRuns.WithLabelValues(outcome).Inc() }
