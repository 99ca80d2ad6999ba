package supervisor

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// UnitState is what lodis reads of one systemd unit.
type UnitState struct {
	Name        string    // e.g. lodis@8080.socket
	LoadState   string    // loaded, not-found, masked, …
	ActiveState string    // active, inactive, failed, activating, deactivating
	SubState    string    // listening, running, dead, failed, …
	Result      string    // the Socket/Service Result=: success, signal, trigger-limit-hit, …
	MainPID     uint32    // services only; 0 when no process runs
	ActiveEnter time.Time // when the unit last entered the active state; zero if never
	// UnitFileState is enabled, disabled, static, …; filled by Units.UnitState
	// and ListUnits, not by signals.
	UnitFileState string
}

// State is "ActiveState/SubState", as systemctl shows it.
func (u UnitState) State() string { return u.ActiveState + "/" + u.SubState }

// Units is the part of systemd's D-Bus API that lodis acts through: the
// supervisor's remedies, and any other package (an upgrade roll-out) that
// drives lodis units. Job methods wait for the job to finish and return an
// error unless its result is "done". Implemented by *Bus over D-Bus.
type Units interface {
	StartUnit(ctx context.Context, name string) error
	StopUnit(ctx context.Context, name string) error
	RestartUnit(ctx context.Context, name string) error
	// TryRestartUnit restarts the unit only if it runs (systemd's
	// try-restart): an inactive unit stays inactive.
	TryRestartUnit(ctx context.Context, name string) error
	// EnqueueRestartUnit queues a restart job and returns once systemd has
	// accepted it, without waiting for the job: for the unit the caller runs
	// in, which the job stops.
	EnqueueRestartUnit(ctx context.Context, name string) error
	ResetFailedUnit(ctx context.Context, name string) error
	UnitState(ctx context.Context, name string) (UnitState, error)
	// ListUnits returns the loaded units whose names match any of the
	// shell-style patterns, e.g. "lodis@*.socket".
	ListUnits(ctx context.Context, patterns ...string) ([]UnitState, error)
}

// SocketUnit and ServiceUnit name the units of the instance on port.
func SocketUnit(port string) string  { return "lodis@" + port + ".socket" }
func ServiceUnit(port string) string { return "lodis@" + port + ".service" }

// ParseUnit splits a lodis instance unit name into its port and type
// ("socket" or "service"); ok is false for any other unit.
func ParseUnit(name string) (port, typ string, ok bool) {
	rest, found := strings.CutPrefix(name, "lodis@")
	if !found {
		return "", "", false
	}
	port, typ, found = strings.Cut(rest, ".")
	if !found || (typ != "socket" && typ != "service") || !validPort(port) {
		return "", "", false
	}
	return port, typ, true
}

func validPort(p string) bool {
	if p == "" || len(p) > 5 {
		return false
	}
	n := 0
	for _, c := range p {
		if c < '0' || c > '9' {
			return false
		}
		n = n*10 + int(c-'0')
	}
	return n >= 1 && n <= 65535 && p[0] != '0'
}

// jobError turns a job result other than "done" into an error.
func jobError(verb, unit, result string) error {
	if result == "done" {
		return nil
	}
	return fmt.Errorf("%s %s: job %s", verb, unit, result)
}
