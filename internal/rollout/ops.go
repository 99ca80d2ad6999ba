package rollout

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/lodis/lodis/internal/health"
	"github.com/lodis/lodis/internal/systemd"
)

// Systemd is the real Ops: lodis units through a systemd.Units connection —
// the supervisor's own when the supervisor drives the roll-out (Service),
// one dialled by DialSystemd when `lodis upgrade` drives it — and each
// worker's health report, from the address its socket listens on.
type Systemd struct {
	// Conn returns the connection to act through now: the supervisor's
	// connection of the moment, so that a roll-out goes on over a new
	// connection after a reconnection. An error while there is none.
	Conn func(ctx context.Context) (systemd.Units, error)
	// ProbeTimeout bounds one health check; default health.DefaultTimeout.
	ProbeTimeout time.Duration
	// Supervisor is the supervisor's unit; default systemd.SupervisorUnit.
	Supervisor string

	health *health.Client
	close  func()
}

// DialSystemd connects to the system manager for a caller that drives a
// roll-out without the supervisor: as root on /run/systemd/private, else
// through the system bus (polkit decides). The connection lives until Close.
func DialSystemd() (*Systemd, error) {
	b, err := systemd.DialUnits(systemd.BusOptions{})
	if err != nil {
		return nil, fmt.Errorf("connect to systemd: %w", err)
	}
	return &Systemd{Conn: func(context.Context) (systemd.Units, error) { return b, nil }, close: b.Close}, nil
}

// Close closes the connection DialSystemd made; it does nothing otherwise.
func (s *Systemd) Close() {
	if s.close != nil {
		s.close()
	}
}

func (s *Systemd) units(ctx context.Context, pattern string, states ...string) ([]string, error) {
	u, err := s.Conn(ctx)
	if err != nil {
		return nil, err
	}
	us, err := u.ListUnits(ctx, pattern)
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

// Running implements Ops: lodis@*.service units active, activating or reloading.
func (s *Systemd) Running(ctx context.Context) ([]string, error) {
	return s.units(ctx, systemd.WorkerPattern, "active", "activating", "reloading")
}

// Listening implements Ops: the services of lodis@*.socket units that are active.
func (s *Systemd) Listening(ctx context.Context) ([]string, error) {
	socks, err := s.units(ctx, systemd.SocketPattern, "active")
	if err != nil {
		return nil, err
	}
	for i, u := range socks {
		socks[i] = systemd.ServiceUnit(systemd.PortOf(u))
	}
	return socks, nil
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

// RestartSupervisor implements Ops. With wait true (the caller is lodis
// upgrade) a supervisor unit that runs is restarted, one that does not is
// left alone. With wait false the caller is the supervisor itself: the
// restart is only queued (the job stops the caller), and it is refused with
// an error when this process is not the unit's main process — a supervisor
// started by hand must not restart the unit's.
//
// Before restarting, the unit's start counter is reset (ResetFailedUnit on
// the running unit): the unit's start limit (StartLimitBurst=) is there to
// end a crash loop, and a deliberate restart onto a release is not a crash.
// Without the reset a few roll-outs in a minute, plus a crash or two, would
// make systemd refuse the restart and leave no supervisor running. A failed
// reset does not keep the restart from being tried.
func (s *Systemd) RestartSupervisor(ctx context.Context, wait bool) error {
	name := s.Supervisor
	if name == "" {
		name = systemd.SupervisorUnit
	}
	units, err := s.Conn(ctx)
	if err != nil {
		return err
	}
	u, err := units.UnitState(ctx, name)
	if wait {
		if err != nil || u.ActiveState != "active" {
			return nil
		}
		reset := s.resetStarts(ctx, units, name)
		if err := units.TryRestartUnit(ctx, name); err != nil {
			return errors.Join(err, reset)
		}
		return nil
	}
	if err != nil {
		return err
	}
	if u.ActiveState != "active" || int(u.MainPID) != os.Getpid() {
		return fmt.Errorf("this process (pid %d) is not the main process of %s (%s, pid %d): not restarting it", os.Getpid(), name, u.State(), u.MainPID)
	}
	reset := s.resetStarts(ctx, units, name)
	// systemd may stop this process — cancelling ctx — before its answer
	// to the call arrives: the call must not be cut short by that.
	qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := units.EnqueueRestartUnit(qctx, name); err != nil {
		return errors.Join(err, reset)
	}
	return nil
}

// resetStarts resets unit's start counter. A failure is returned for the
// caller to report only if the restart fails too: the restart is tried
// either way.
func (s *Systemd) resetStarts(ctx context.Context, units systemd.Units, unit string) error {
	if err := units.ResetFailedUnit(ctx, unit); err != nil {
		return fmt.Errorf("reset the start counter of %s first: %w", unit, err)
	}
	return nil
}

// Health implements Ops: the health report of the worker behind unit's
// socket, dialled at the address the socket listens on.
func (s *Systemd) Health(ctx context.Context, unit string) (health.Report, error) {
	if s.health == nil {
		s.health = &health.Client{Timeout: s.ProbeTimeout, UserAgent: "lodis-rollout"}
	}
	port := systemd.PortOf(unit)
	u, err := s.Conn(ctx)
	if err != nil {
		return health.Report{}, err
	}
	listen, err := u.ListenAddress(ctx, systemd.SocketUnit(port))
	if err != nil {
		return health.Report{}, err
	}
	r, _, err := s.health.Get(ctx, listen, port)
	return r, err
}
