package systemd

import (
	"context"
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
	// InactiveExit is when the unit last left the inactive (or failed)
	// state: for a service, when its start began (ActiveState activating).
	// Zero if never.
	InactiveExit time.Time
	// UnitFileState is enabled, disabled, static, …; filled by
	// Units.UnitState and ListUnits, not by unit changes.
	UnitFileState string
	// Environment is a service's Environment= (KEY=value), as its unit
	// files and drop-ins set it; filled like UnitFileState.
	Environment []string
}

// State is "ActiveState/SubState", as systemctl shows it.
func (u UnitState) State() string { return u.ActiveState + "/" + u.SubState }

// Units is the part of systemd's D-Bus API that lodis acts through: the
// supervisor's remedies, and a roll-out driving lodis units. Job methods
// wait for the job to finish and return an error unless its result is
// "done". Implemented by *Bus.
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
	// EnqueueStopUnit queues a stop job and returns once systemd has
	// accepted it: the unit drains while the caller goes on.
	EnqueueStopUnit(ctx context.Context, name string) error
	// EnqueueStartUnit queues a start job and returns once systemd has
	// accepted it: for a oneshot unit that does a long task.
	EnqueueStartUnit(ctx context.Context, name string) error
	ResetFailedUnit(ctx context.Context, name string) error
	UnitState(ctx context.Context, name string) (UnitState, error)
	// ListUnits returns the loaded units whose names match any of the
	// shell-style patterns, e.g. SocketPattern.
	ListUnits(ctx context.Context, patterns ...string) ([]UnitState, error)
	// UnitPIDs returns the processes in the unit's control group, none when
	// it runs none.
	UnitPIDs(ctx context.Context, name string) ([]int, error)
	// ListenAddress returns the first stream address socket listens on
	// (Socket.Listen), e.g. "[::]:8080"; "" when it has none or is not
	// loaded.
	ListenAddress(ctx context.Context, socket string) (string, error)
}
