package supervisor

import (
	"sort"
	"strings"
	"time"

	"github.com/lodis/lodis/internal/statusapi"
	"github.com/lodis/lodis/internal/systemd"
)

// updateGauges sets the instance gauges from the tracked states.
func (s *Supervisor) updateGauges() {
	for _, in := range s.instances {
		s.gaugeInstance(in)
	}
}

// snapshot builds the status view.
func (s *Supervisor) snapshot() statusapi.Snapshot {
	now := time.Now()
	snap := statusapi.Snapshot{Connected: s.bus != nil, Since: s.started, Instances: []statusapi.InstanceStatus{}}
	if s.bus != nil {
		snap.Bus = strings.TrimPrefix(s.bus.Address(), "unix:path=")
	}
	for _, in := range s.instances {
		unit, w := in.worker()
		st := statusapi.InstanceStatus{Port: in.port, Socket: in.socket.State(), SocketResult: in.socket.Result,
			Worker: w.State(), WorkerResult: w.Result, Restarts: in.restarts}
		if unit != systemd.ServiceUnit(in.port) {
			st.WorkerUnit = unit
		}
		if !in.socketSeen {
			st.Socket = "not-loaded"
		}
		if (!in.serviceSeen && !in.altSeen) || w.ActiveState == "" {
			st.Worker = "inactive/dead"
		}
		if w.ActiveState == "active" {
			st.PID = w.MainPID
			if !w.ActiveEnter.IsZero() {
				st.UptimeSeconds = now.Sub(w.ActiveEnter).Seconds()
			}
			st.SHA256, st.Version, _ = in.runningRelease()
		}
		if !in.probe.lastAt.IsZero() {
			hs := &statusapi.ProbeStatus{OK: in.probe.lastErr == "", Error: in.probe.lastErr, At: in.probe.lastAt,
				LatencyMS: float64(in.probe.latency.Microseconds()) / 1000, Failures: in.probe.failures}
			st.Health = hs
		}
		snap.Instances = append(snap.Instances, st)
	}
	sort.Slice(snap.Instances, func(i, j int) bool { return systemd.PortLess(snap.Instances[i].Port, snap.Instances[j].Port) })
	return snap
}
