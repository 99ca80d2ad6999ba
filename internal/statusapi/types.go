package statusapi

import "time"

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
	Port         string `json:"port"`
	Socket       string `json:"socket"` // "active/listening", "failed/failed", …
	SocketResult string `json:"socket_result,omitempty"`
	Worker       string `json:"worker"` // "active/running", "inactive/dead", …
	// WorkerUnit names the unit serving the port when it is not the port's
	// own worker: its alternate, lodis-alt@PORT.service, after a roll-out.
	WorkerUnit    string       `json:"worker_unit,omitempty"`
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
