// Package metrics holds the supervisor's Prometheus metrics, in a registry
// of their own, served at GET /metrics of the status API (and, through
// lodis-metrics.socket, over TCP). The state machine, the event stream, the
// hook and the roll-out service report through its methods; nothing else
// touches the collectors, and this file is the one place that names them.
// docs/metrics.md describes each one.
//
// Names follow node_exporter's conventions: the lodis_ prefix, base units
// (seconds), _total for counters, _info for a gauge that is 1 and carries
// its facts in labels. Per-port series carry the label port and are deleted
// when the supervisor stops watching the port (ForgetPort).
package metrics

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/lodis/lodis/internal/events"
)

// UnitStates are the values of the state label of lodis_socket_state and
// lodis_worker_state: the ActiveStates a unit rests or moves in. A unit in
// another (reloading, maintenance) has every one at 0.
var UnitStates = []string{"active", "inactive", "failed", "activating", "deactivating"}

// RemedyKinds are the values of lodis_remedies_total's kind label, one per
// remedy of the supervisor; RemedyResults those of its result label.
var (
	RemedyKinds   = []string{"recover-socket", "reset-failed", "restart", "idle-stop"}
	RemedyResults = []string{"done", "failed"}
)

// RolloutKinds and RolloutOutcomes are the label values of the roll-out
// metrics; RejectionStages those of lodis_releases_rejected_total.
var (
	RolloutKinds    = []string{"upgrade", "rollback"}
	RolloutOutcomes = []string{"done", "rolled-back", "failed"}
	RejectionStages = []string{"validation", "rollout"}
)

// Metrics are the supervisor's metrics (plus the process collector:
// process_resident_memory_bytes, process_cpu_seconds_total, …). Its methods
// are safe for concurrent use.
type Metrics struct {
	Registry *prometheus.Registry

	socketState, workerState *prometheus.GaugeVec
	workerFailures           *prometheus.CounterVec
	workerRelease            *prometheus.GaugeVec
	remedies                 *prometheus.CounterVec
	probeLatency             *prometheus.HistogramVec
	activation               *prometheus.HistogramVec
	conns                    *prometheus.GaugeVec
	acceptQueue, acceptMax   *prometheus.GaugeVec
	appRequests              *prometheus.CounterVec
	releaseInfo              *prometheus.GaugeVec
	rejected                 *prometheus.CounterVec
	rollouts                 *prometheus.CounterVec
	rolloutDuration          *prometheus.HistogramVec
	rolloutInProgress        prometheus.Gauge
	events                   *prometheus.CounterVec
	hookRuns                 *prometheus.CounterVec
	busConnected             prometheus.Gauge

	mu      sync.Mutex
	listens map[string]map[string]bool // port → listen labels set now
	release map[string][2]string       // port → sha256, version of lodis_worker_release_info
}

// New creates and registers the metrics.
func New() *Metrics {
	gauge := func(name, help string, labels ...string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
	}
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	}
	histogram := func(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
	}
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		socketState: gauge("lodis_socket_state",
			"1 for the ActiveState the port's socket unit (lodis@PORT.socket) is in, 0 for the others.", "port", "state"),
		workerState: gauge("lodis_worker_state",
			"1 for the ActiveState the port's worker unit (lodis@PORT.service) is in, 0 for the others.", "port", "state"),
		workerFailures: counter("lodis_worker_failures_total",
			"Worker units of the port that entered the failed state (crashed, killed, timed out).", "port"),
		workerRelease: gauge("lodis_worker_release_info",
			"1 while a worker runs on the port, labelled with the release it runs.", "port", "sha256", "version"),
		remedies: counter("lodis_remedies_total",
			"Remedies the supervisor applied to the port, by kind and result.", "port", "kind", "result"),
		probeLatency: histogram("lodis_health_probe_duration_seconds",
			"Latency of the supervisor's health probes of the port's running worker, by result (ok or failed).",
			[]float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}, "port", "result"),
		activation: histogram("lodis_activation_ready_seconds",
			"Time from a worker's start (the unit leaving inactive) to ready (active for READY=notify apps, the first healthy probe for READY=health apps).",
			[]float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}, "port"),
		conns: gauge("lodis_connections",
			"Connections established to the port, as the kernel counts them.", "port"),
		acceptQueue: gauge("lodis_accept_queue_length",
			"Connections waiting in the accept queue of the port's listening socket listen, as the kernel counts them.", "port", "listen"),
		acceptMax: gauge("lodis_accept_queue_max",
			"The limit of that accept queue (the socket's backlog).", "port", "listen"),
		appRequests: counter("lodis_app_requests_total",
			"Requests the port's workers served, as their health answers report them (\"requests\"), summed over workers.", "port"),
		releaseInfo: gauge("lodis_release_info",
			"1 for the active and the previous release of the store.", "sha256", "version", "state"),
		rejected: counter("lodis_releases_rejected_total",
			"Releases refused, by stage: validation (a drop) or rollout (rolled back).", "stage"),
		rollouts: counter("lodis_rollouts_total",
			"Roll-outs that ended, by kind and outcome.", "kind", "outcome"),
		rolloutDuration: histogram("lodis_rollout_duration_seconds",
			"Duration of the roll-outs that ended, from their start to their end, by kind and outcome.",
			[]float64{1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800}, "kind", "outcome"),
		rolloutInProgress: prometheus.NewGauge(prometheus.GaugeOpts{Name: "lodis_rollout_in_progress",
			Help: "1 while a roll-out is under way, else 0."}),
		events: counter("lodis_events_total",
			"Events the supervisor emitted, by kind.", "kind"),
		hookRuns: counter("lodis_hook_runs_total",
			"Runs of the --on-event hook, by outcome.", "outcome"),
		busConnected: prometheus.NewGauge(prometheus.GaugeOpts{Name: "lodis_bus_connected",
			Help: "1 while the supervisor is connected to systemd's D-Bus API."}),
		listens: map[string]map[string]bool{},
		release: map[string][2]string{},
	}
	// Series known in advance start at 0, so that the first increase shows.
	for _, k := range RolloutKinds {
		for _, o := range RolloutOutcomes {
			m.rollouts.WithLabelValues(k, o)
		}
	}
	for _, s := range RejectionStages {
		m.rejected.WithLabelValues(s)
	}
	// The process collector (RSS, CPU, fds) but not the Go collector: its
	// runtime/metrics descriptions cost memory the supervisor keeps small.
	m.Registry.MustRegister(m.socketState, m.workerState, m.workerFailures, m.workerRelease, m.remedies, m.probeLatency,
		m.activation, m.conns, m.acceptQueue, m.acceptMax, m.appRequests, m.releaseInfo, m.rejected, m.rollouts,
		m.rolloutDuration, m.rolloutInProgress, m.events, m.hookRuns, m.busConnected,
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// WatchPort creates the port's counters at 0 (worker failures, remedies of
// every kind and result), so that their first increase shows. Call it when
// the supervisor starts watching the port.
func (m *Metrics) WatchPort(port string) {
	m.workerFailures.WithLabelValues(port)
	for _, k := range RemedyKinds {
		for _, r := range RemedyResults {
			m.remedies.WithLabelValues(port, k, r)
		}
	}
}

// ForgetPort deletes every series of port: call it when the supervisor
// stops watching the port (its units are gone).
func (m *Metrics) ForgetPort(port string) {
	l := prometheus.Labels{"port": port}
	for _, v := range []interface {
		DeletePartialMatch(prometheus.Labels) int
	}{m.socketState, m.workerState, m.workerFailures, m.workerRelease, m.remedies, m.probeLatency, m.activation,
		m.conns, m.acceptQueue, m.acceptMax, m.appRequests} {
		v.DeletePartialMatch(l)
	}
	m.mu.Lock()
	delete(m.listens, port)
	delete(m.release, port)
	m.mu.Unlock()
}

// SetUnitStates sets lodis_socket_state and lodis_worker_state of port from
// the ActiveStates of its socket and worker units.
func (m *Metrics) SetUnitStates(port, socket, worker string) {
	for _, s := range UnitStates {
		m.socketState.WithLabelValues(port, s).Set(boolValue(s == socket))
		m.workerState.WithLabelValues(port, s).Set(boolValue(s == worker))
	}
}

// SetWorkerRelease sets lodis_worker_release_info of port: the release
// (sha256, version; either may be "" when unknown) its running worker runs.
// running false deletes the series: no worker runs.
func (m *Metrics) SetWorkerRelease(port string, running bool, sha256, version string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	old, had := m.release[port]
	if had && (!running || old != [2]string{sha256, version}) {
		m.workerRelease.DeleteLabelValues(port, old[0], old[1])
		delete(m.release, port)
	}
	if running {
		m.workerRelease.WithLabelValues(port, sha256, version).Set(1)
		m.release[port] = [2]string{sha256, version}
	}
}

// CountWorkerFailure counts one worker of port that entered "failed".
func (m *Metrics) CountWorkerFailure(port string) { m.workerFailures.WithLabelValues(port).Inc() }

// CountRemedy counts one remedy of kind (RemedyKinds) on port with its
// result (done or failed).
func (m *Metrics) CountRemedy(port, kind, result string) {
	m.remedies.WithLabelValues(port, kind, result).Inc()
}

// ObserveProbe records the latency of one health probe of port's running
// worker; result is ok or failed.
func (m *Metrics) ObserveProbe(port, result string, seconds float64) {
	m.probeLatency.WithLabelValues(port, result).Observe(seconds)
}

// ObserveActivation records how long one worker of port took from its start
// to ready.
func (m *Metrics) ObserveActivation(port string, seconds float64) {
	m.activation.WithLabelValues(port).Observe(seconds)
}

// AddAppRequests adds n requests served by a worker of port, as the
// difference of the counts its health answers report.
func (m *Metrics) AddAppRequests(port string, n uint64) {
	m.appRequests.WithLabelValues(port).Add(float64(n))
}

// Listener is one listening socket of a port as the kernel counts it
// (package sockets): its address, the connections waiting in its accept
// queue and the queue's limit.
type Listener struct {
	Addr           string
	Queue, Backlog int
}

// SetConns sets the kernel's counts of port: established connections, and
// for each listening socket the connections waiting in its accept queue and
// the queue's limit. A listening socket that is gone loses its series.
func (m *Metrics) SetConns(port string, established int, listeners []Listener) {
	m.conns.WithLabelValues(port).Set(float64(established))
	now := map[string]bool{}
	for _, l := range listeners {
		now[l.Addr] = true
		m.acceptQueue.WithLabelValues(port, l.Addr).Set(float64(l.Queue))
		m.acceptMax.WithLabelValues(port, l.Addr).Set(float64(l.Backlog))
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for addr := range m.listens[port] {
		if !now[addr] {
			m.acceptQueue.DeleteLabelValues(port, addr)
			m.acceptMax.DeleteLabelValues(port, addr)
		}
	}
	m.listens[port] = now
}

// Release is one line of lodis_release_info.
type Release struct {
	SHA256, Version string
	State           string // active or previous
}

// SetReleases replaces lodis_release_info with rs.
func (m *Metrics) SetReleases(rs []Release) {
	m.releaseInfo.Reset()
	for _, r := range rs {
		m.releaseInfo.WithLabelValues(r.SHA256, r.Version, r.State).Set(1)
	}
}

// CountRejections adds n releases refused at stage (validation or rollout).
func (m *Metrics) CountRejections(stage string, n int) {
	m.rejected.WithLabelValues(stage).Add(float64(n))
}

// CountRollout counts one roll-out that ended — kind upgrade or rollback,
// outcome done, rolled-back or failed — and records how long it took.
func (m *Metrics) CountRollout(kind, outcome string, seconds float64) {
	m.rollouts.WithLabelValues(kind, outcome).Inc()
	m.rolloutDuration.WithLabelValues(kind, outcome).Observe(seconds)
}

// SetRolloutInProgress sets lodis_rollout_in_progress.
func (m *Metrics) SetRolloutInProgress(on bool) { m.rolloutInProgress.Set(boolValue(on)) }

// CountEvent counts e; subscribe it to the event stream.
func (m *Metrics) CountEvent(e events.Event) { m.events.WithLabelValues(e.Kind).Inc() }

// CountHook counts one hook outcome: ok, failed, timeout or dropped.
func (m *Metrics) CountHook(outcome string) { m.hookRuns.WithLabelValues(outcome).Inc() }

// SetBusConnected sets lodis_bus_connected.
func (m *Metrics) SetBusConnected(up bool) { m.busConnected.Set(boolValue(up)) }

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
