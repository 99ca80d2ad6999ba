package rollout

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/lodis/lodis/internal/appconf"
	"github.com/lodis/lodis/internal/health"
	"github.com/lodis/lodis/internal/release"
	"github.com/lodis/lodis/internal/sockets"
	"github.com/lodis/lodis/internal/systemd"
)

// Systemd is the real Ops: lodis units through a systemd.Units connection —
// the supervisor's own when the supervisor drives the roll-out (Service),
// root's own when `lodis upgrade` drives it — and each
// worker's health report, from the address its socket listens on.
type Systemd struct {
	// Conn returns the connection to act through now: the supervisor's
	// connection of the moment, so that a roll-out goes on over a new
	// connection after a reconnection. An error while there is none.
	Conn func(ctx context.Context) (systemd.Units, error)
	// App says where and how long a worker's health is checked (HealthPath,
	// HealthTimeout).
	App appconf.Config
	// Store tells which release a worker process runs.
	Store *release.Store

	health *health.Client
}

func (s *Systemd) units(ctx context.Context, patterns []string, states ...string) ([]string, error) {
	u, err := s.Conn(ctx)
	if err != nil {
		return nil, err
	}
	us, err := u.ListUnits(ctx, patterns...)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(us))
	for _, u := range us {
		if slices.Contains(states, u.ActiveState) {
			out = append(out, u.Name)
		}
	}
	systemd.SortUnits(out)
	return out, nil
}

// Running implements Ops: the ports whose lodis@PORT.service or
// lodis-alt@PORT.service is active, activating or reloading.
func (s *Systemd) Running(ctx context.Context) ([]string, error) {
	us, err := s.units(ctx, []string{systemd.WorkerPattern, systemd.AltPattern}, serving...)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, u := range us {
		if p := systemd.ServiceUnit(systemd.PortOf(u)); !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	systemd.SortUnits(out)
	return out, nil
}

// serving are the ActiveStates of a unit that serves its port.
var serving = []string{"active", "activating", "reloading"}

// Listening implements Ops: the services of lodis@*.socket units that are active.
func (s *Systemd) Listening(ctx context.Context) ([]string, error) {
	socks, err := s.units(ctx, []string{systemd.SocketPattern}, "active")
	if err != nil {
		return nil, err
	}
	for i, u := range socks {
		socks[i] = systemd.ServiceUnit(systemd.PortOf(u))
	}
	return socks, nil
}

// Workers implements Ops: which of the port's two worker units serve it.
func (s *Systemd) Workers(ctx context.Context, u string) ([]string, error) {
	port := systemd.PortOf(u)
	return s.units(ctx, []string{systemd.ServiceUnit(port), systemd.AltUnit(port)}, serving...)
}

// Restart implements Ops with a try-restart job. A failed unit is reset
// first, so that its socket can start it again.
func (s *Systemd) Restart(ctx context.Context, unit string) error {
	u, err := s.Conn(ctx)
	if err != nil {
		return err
	}
	if st, err := u.UnitState(ctx, unit); err == nil && st.ActiveState == "failed" {
		u.ResetFailedUnit(ctx, unit)
	}
	return u.TryRestartUnit(ctx, unit)
}

// Start implements Ops with a start job, after resetting a failed unit.
func (s *Systemd) Start(ctx context.Context, unit string) error {
	u, err := s.Conn(ctx)
	if err != nil {
		return err
	}
	if st, err := u.UnitState(ctx, unit); err == nil && st.ActiveState == "failed" {
		u.ResetFailedUnit(ctx, unit)
	}
	return u.StartUnit(ctx, unit)
}

// Stop implements Ops with a stop job: SIGTERM, the app's drain, at most the
// unit's TimeoutStopSec.
func (s *Systemd) Stop(ctx context.Context, unit string) error {
	u, err := s.Conn(ctx)
	if err != nil {
		return err
	}
	return u.StopUnit(ctx, unit)
}

// errOtherUnit is a health answer that came from the other unit of the port.
var errOtherUnit = errors.New("answered by the other worker of the port")

// acceptPoll is how often acceptedBy looks again at a connection that waits
// in the socket's queue.
const acceptPoll = 2 * time.Millisecond

// acceptedBy waits until a process accepts the connection local → remote
// (at most the health timeout) and tells whether it is one of unit's
// processes, pids: errOtherUnit when it is not.
func (s *Systemd) acceptedBy(ctx context.Context, unit string, pids []int, local, remote net.Addr) error {
	timeout := cmp.Or(s.health.Timeout, health.DefaultTimeout)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		pid, err := sockets.Owner(local, remote, pids)
		switch {
		case errors.Is(err, sockets.ErrNoOwner) || (err == nil && pid == 0):
			return errOtherUnit
		case !errors.Is(err, sockets.ErrNotAccepted):
			return err
		}
		if err := sleep(ctx, acceptPoll); err != nil {
			return fmt.Errorf("%s: the health check's connection was not accepted within %s", unit, timeout)
		}
	}
}

// checkTries bounds the connections Check makes to reach one of two
// workers that accept on the same socket (the kernel hands each
// connection to whichever accepts first).
const checkTries = 16

// Check implements Ops: the health answer of unit's worker, dialled at the
// address the port's socket listens on, on the app's health path; then the
// release of the unit's main process (release.Store.ReleaseOf). While the
// port's other unit runs too, each answer's connection is traced to the
// process that accepted it (sockets.Owner), and answers from the other
// unit are not counted.
func (s *Systemd) Check(ctx context.Context, unit string) (Worker, error) {
	if s.health == nil {
		s.health = &health.Client{Timeout: s.App.HealthTimeout, UserAgent: "lodis-rollout"}
	}
	port := systemd.PortOf(unit)
	u, err := s.Conn(ctx)
	if err != nil {
		return Worker{}, err
	}
	listen, err := u.ListenAddress(ctx, systemd.SocketUnit(port))
	if err != nil {
		return Worker{}, err
	}
	other := otherUnit(unit)
	others, err := u.UnitPIDs(ctx, other)
	if err != nil {
		return Worker{}, err
	}
	var h health.Report
	switch {
	case len(others) == 0:
		// Nothing else accepts on the socket: the answer is unit's (or
		// activates it).
		h, _, err = s.health.Get(ctx, listen, port, s.App.HealthPath)
	default:
		pids, perr := u.UnitPIDs(ctx, unit)
		if perr != nil {
			return Worker{}, perr
		}
		for range checkTries {
			h, _, err = s.health.GetHeld(ctx, listen, port, s.App.HealthPath, func(local, remote net.Addr) error {
				return s.acceptedBy(ctx, unit, pids, local, remote)
			})
			if !errors.Is(err, errOtherUnit) {
				break
			}
		}
		if errors.Is(err, errOtherUnit) {
			return Worker{}, fmt.Errorf("%s: %d health checks in a row %v (%s)", unit, checkTries, err, other)
		}
	}
	var syn *health.SyntaxError
	if err != nil && !errors.As(err, &syn) {
		return Worker{}, err
	}
	st, err := u.UnitState(ctx, unit)
	if err != nil {
		return Worker{}, err
	}
	if st.MainPID == 0 {
		return Worker{}, fmt.Errorf("%s runs no process", unit)
	}
	w := Worker{PID: st.MainPID, Version: h.Version}
	if s.Store != nil {
		w.Release = s.Store.ReleaseOf(int(st.MainPID))
	}
	return w, nil
}
