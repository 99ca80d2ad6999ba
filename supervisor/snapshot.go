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
	if s.o.Metrics == nil {
		return
	}
	count := map[[2]string]int{}
	for _, in := range s.instances {
		sock, work := in.socket.ActiveState, in.service.ActiveState
		if sock == "" || !in.socketSeen {
			sock = "inactive"
		}
		if work == "" || !in.serviceSeen {
			work = "inactive"
		}
		count[[2]string{sock, work}]++
	}
	s.o.Metrics.SetInstances(count)
}

// snapshot builds the status view.
func (s *Supervisor) snapshot() statusapi.Snapshot {
	now := time.Now()
	snap := statusapi.Snapshot{Connected: s.bus != nil, Since: s.started, Instances: []statusapi.InstanceStatus{}}
	if s.bus != nil {
		snap.Bus = strings.TrimPrefix(s.bus.Address(), "unix:path=")
	}
	for _, in := range s.instances {
		st := statusapi.InstanceStatus{Port: in.port, Socket: in.socket.State(), SocketResult: in.socket.Result,
			Worker: in.service.State(), WorkerResult: in.service.Result, Restarts: in.restarts}
		if !in.socketSeen {
			st.Socket = "not-loaded"
		}
		if !in.serviceSeen || in.service.ActiveState == "" {
			st.Worker = "inactive/dead"
		}
		if in.service.ActiveState == "active" {
			st.PID = in.service.MainPID
			if !in.service.ActiveEnter.IsZero() {
				st.UptimeSeconds = now.Sub(in.service.ActiveEnter).Seconds()
			}
			if h := in.probe.last; h != nil && uint32(h.PID) == in.service.MainPID {
				st.Version, st.SHA256 = h.Version, h.SHA256
			}
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
