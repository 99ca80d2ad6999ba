package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"

	"github.com/lodis/lodis/release"
)

// Unit names the real Ops acts on.
const (
	WorkerPattern  = "lodis@*.service"
	SocketPattern  = "lodis@*.socket"
	SupervisorUnit = "lodis-supervisor.service"
)

// Systemd is the real Ops: systemd over D-Bus (go-systemd) and HTTP to each
// worker's /__/health on Host.
type Systemd struct {
	Conn *sddbus.Conn
	// Host is where workers answer; default "127.0.0.1".
	Host string
	// ProbeTimeout bounds one health probe; default 2 s.
	ProbeTimeout time.Duration
	// Supervisor is the supervisor's unit; default SupervisorUnit.
	Supervisor string

	client *http.Client
}

// DialSystemd connects to the system bus's service manager. The connection
// lives until Close; it is not tied to a context (cancelling the one given to
// go-systemd's dial would close it).
func DialSystemd() (*Systemd, error) {
	c, err := sddbus.NewSystemConnectionContext(context.Background())
	if err != nil {
		return nil, fmt.Errorf("connect to systemd: %w", err)
	}
	return &Systemd{Conn: c}, nil
}

// Close closes the D-Bus connection.
func (s *Systemd) Close() { s.Conn.Close() }

func (s *Systemd) units(ctx context.Context, states []string, pattern string) ([]string, error) {
	us, err := s.Conn.ListUnitsByPatternsContext(ctx, states, []string{pattern})
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", pattern, err)
	}
	out := make([]string, 0, len(us))
	for _, u := range us {
		out = append(out, u.Name)
	}
	SortUnits(out)
	return out, nil
}

// Running implements Ops: lodis@*.service units active, activating or reloading.
func (s *Systemd) Running(ctx context.Context) ([]string, error) {
	return s.units(ctx, []string{"active", "activating", "reloading"}, WorkerPattern)
}

// Listening implements Ops: the services of lodis@*.socket units that are active.
func (s *Systemd) Listening(ctx context.Context) ([]string, error) {
	socks, err := s.units(ctx, []string{"active"}, SocketPattern)
	if err != nil {
		return nil, err
	}
	for i, u := range socks {
		socks[i] = "lodis@" + PortOf(u) + ".service"
	}
	return socks, nil
}

// Restart implements Ops with TryRestartUnit in "replace" mode. A failed unit
// is reset first, so that its socket can start it again.
func (s *Systemd) Restart(ctx context.Context, unit string) error {
	if p, err := s.Conn.GetUnitPropertyContext(ctx, unit, "ActiveState"); err == nil && p.Value.Value() == "failed" {
		s.Conn.ResetFailedUnitContext(ctx, unit)
	}
	return s.job(ctx, unit, true)
}

func (s *Systemd) job(ctx context.Context, unit string, wait bool) error {
	// Buffered: go-systemd sends the job result while holding a lock, and an
	// unread channel would stall every job on this connection.
	ch := make(chan string, 1)
	if _, err := s.Conn.TryRestartUnitContext(ctx, unit, "replace", ch); err != nil {
		return fmt.Errorf("queue restart: %w", err)
	}
	if !wait {
		return nil
	}
	select {
	case res := <-ch:
		if res != "done" {
			return fmt.Errorf("restart job %s", res)
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// RestartSupervisor implements Ops: try-restart of the supervisor unit
// (nothing happens when it does not run or is not installed).
func (s *Systemd) RestartSupervisor(ctx context.Context, wait bool) error {
	u := s.Supervisor
	if u == "" {
		u = SupervisorUnit
	}
	if p, err := s.Conn.GetUnitPropertyContext(ctx, u, "ActiveState"); err != nil || p.Value.Value() != "active" {
		return nil
	}
	return s.job(ctx, u, wait)
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
