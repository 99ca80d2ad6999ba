package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"time"

	"github.com/lodis/lodis/release"
	"github.com/lodis/lodis/supervisor"
)

// Unit names the real Ops acts on.
const (
	WorkerPattern  = "lodis@*.service"
	SocketPattern  = "lodis@*.socket"
	SupervisorUnit = "lodis-supervisor.service"
)

// Systemd is the real Ops: lodis units through supervisor.Units — the
// supervisor's own D-Bus connection when the supervisor drives the roll-out
// (Service), one dialled by DialSystemd when `lodis upgrade` drives it — and
// HTTP to each worker's /__/health on Host.
type Systemd struct {
	Units supervisor.Units
	// Host is where workers answer; default "127.0.0.1".
	Host string
	// ProbeTimeout bounds one health probe; default 2 s.
	ProbeTimeout time.Duration
	// Supervisor is the supervisor's unit; default SupervisorUnit.
	Supervisor string

	client *http.Client
	close  func()
}

// DialSystemd connects to the system manager for a caller that drives a
// roll-out without the supervisor: as root on /run/systemd/private, else
// through the system bus (polkit decides). The connection lives until Close.
func DialSystemd() (*Systemd, error) {
	b, err := supervisor.DialUnits(supervisor.BusOptions{})
	if err != nil {
		return nil, fmt.Errorf("connect to systemd: %w", err)
	}
	return &Systemd{Units: b, close: b.Close}, nil
}

// Close closes the connection DialSystemd made; it does nothing otherwise.
func (s *Systemd) Close() {
	if s.close != nil {
		s.close()
	}
}

func (s *Systemd) units(ctx context.Context, pattern string, states ...string) ([]string, error) {
	us, err := s.Units.ListUnits(ctx, pattern)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(us))
	for _, u := range us {
		if slices.Contains(states, u.ActiveState) {
			out = append(out, u.Name)
		}
	}
	SortUnits(out)
	return out, nil
}

// Running implements Ops: lodis@*.service units active, activating or reloading.
func (s *Systemd) Running(ctx context.Context) ([]string, error) {
	return s.units(ctx, WorkerPattern, "active", "activating", "reloading")
}

// Listening implements Ops: the services of lodis@*.socket units that are active.
func (s *Systemd) Listening(ctx context.Context) ([]string, error) {
	socks, err := s.units(ctx, SocketPattern, "active")
	if err != nil {
		return nil, err
	}
	for i, u := range socks {
		socks[i] = "lodis@" + PortOf(u) + ".service"
	}
	return socks, nil
}

// Restart implements Ops with a try-restart job. A failed unit is reset
// first, so that its socket can start it again.
func (s *Systemd) Restart(ctx context.Context, unit string) error {
	if u, err := s.Units.UnitState(ctx, unit); err == nil && u.ActiveState == "failed" {
		s.Units.ResetFailedUnit(ctx, unit)
	}
	return s.Units.TryRestartUnit(ctx, unit)
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
		name = SupervisorUnit
	}
	u, err := s.Units.UnitState(ctx, name)
	if wait {
		if err != nil || u.ActiveState != "active" {
			return nil
		}
		reset := s.resetStarts(ctx, name)
		if err := s.Units.TryRestartUnit(ctx, name); err != nil {
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
	reset := s.resetStarts(ctx, name)
	// systemd may stop this process — cancelling ctx — before its answer
	// to the call arrives: the call must not be cut short by that.
	qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := s.Units.EnqueueRestartUnit(qctx, name); err != nil {
		return errors.Join(err, reset)
	}
	return nil
}

// resetStarts resets unit's start counter. A failure is returned for the
// caller to report only if the restart fails too: the restart is tried
// either way.
func (s *Systemd) resetStarts(ctx context.Context, unit string) error {
	if err := s.Units.ResetFailedUnit(ctx, unit); err != nil {
		return fmt.Errorf("reset the start counter of %s first: %w", unit, err)
	}
	return nil
}

// HTTPStatusError is a health answer other than 200: a definite "unhealthy".
type HTTPStatusError struct {
	Status string
	Body   string
}

func (e *HTTPStatusError) Error() string {
	return fmt.Sprintf("/__/health answered %s: %s", e.Status, e.Body)
}

// Health implements Ops: GET http://Host:PORT/__/health, without keep-alive.
func (s *Systemd) Health(ctx context.Context, unit string) (Health, error) {
	if s.client == nil {
		s.client = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	}
	host, to := s.Host, s.ProbeTimeout
	if host == "" {
		host = "127.0.0.1"
	}
	if to <= 0 {
		to = 2 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, to)
	defer cancel()
	return GetHealth(ctx, s.client, "http://"+host+":"+PortOf(unit)+"/__/health")
}

// GetHealth fetches and decodes a /__/health answer.
func GetHealth(ctx context.Context, c *http.Client, url string) (Health, error) {
	var h Health
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return h, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return h, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return h, err
	}
	if resp.StatusCode != http.StatusOK {
		return h, &HTTPStatusError{Status: resp.Status, Body: string(trimBody(b))}
	}
	if err := json.Unmarshal(b, &h); err != nil {
		return h, fmt.Errorf("/__/health: bad JSON: %w", err)
	}
	return h, nil
}

func trimBody(b []byte) []byte {
	if len(b) > 200 {
		b = b[:200]
	}
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}

// FileStore persists a roll-out's State as JSON in one file, replaced
// atomically on every Save.
type FileStore struct {
	Path string
}

// DefaultStatePath is where the roll-out in progress (or the last one) is kept.
const DefaultStatePath = "/var/lib/lodis/rollout.json"

// Save implements Persister.
func (f *FileStore) Save(st *State) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := release.WriteFileAtomic(f.Path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("save roll-out: %w", err)
	}
	return nil
}

// Load returns the persisted State, or nil when there is none.
func (f *FileStore) Load() (*State, error) {
	b, err := os.ReadFile(f.Path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load roll-out: %w", err)
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("load roll-out %s: bad JSON: %w", f.Path, err)
	}
	return &st, nil
}
