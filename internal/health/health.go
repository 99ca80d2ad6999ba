// Package health is the health contract between a worker and the rest of
// lodis: the path a worker answers on, the JSON it answers with (Report), and
// the one client (Client) that the supervisor's probes and the roll-out's
// checks both use. The client dials the address the socket really listens
// on, as systemd reports it, never a guess.
package health

import "time"

// Path is where a worker answers its health check.
const Path = "/__/health"

// Report is the JSON body of a worker's health answer. `lodis serve` fills
// every field; a reader relies on none being present except where it says
// so (the supervisor needs PID, a roll-out needs SHA256).
type Report struct {
	Status        string  `json:"status"` // "ok" when healthy
	PID           int     `json:"pid"`
	Version       string  `json:"version"`
	Commit        string  `json:"commit,omitempty"`
	SHA256        string  `json:"sha256"`
	Port          string  `json:"port,omitempty"`
	UptimeSeconds float64 `json:"uptime_seconds"`
	Requests      uint64  `json:"requests"`
	OpenConns     int64   `json:"open_conns"`
	Started       string  `json:"started,omitempty"` // RFC 3339
}

// Uptime is UptimeSeconds as a duration.
func (r Report) Uptime() time.Duration { return time.Duration(r.UptimeSeconds * float64(time.Second)) }
