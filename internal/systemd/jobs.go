package systemd

import (
	"context"
	"fmt"
)

func (b *Bus) job(ctx context.Context, verb, name string,
	f func(context.Context, string, string, chan<- string) (int, error)) error {
	ch := make(chan string, 1) // buffered: go-systemd sends while holding its job lock
	if _, err := f(ctx, name, "replace", ch); err != nil {
		return fmt.Errorf("%s %s: %w", verb, name, err)
	}
	select {
	case r := <-ch:
		return jobError(verb, name, r)
	case <-ctx.Done():
		return fmt.Errorf("%s %s: waiting for the job: %w", verb, name, ctx.Err())
	}
}

// StartUnit implements Units.
func (b *Bus) StartUnit(ctx context.Context, name string) error {
	return b.job(ctx, "start", name, b.conn.StartUnitContext)
}

// StopUnit implements Units.
func (b *Bus) StopUnit(ctx context.Context, name string) error {
	return b.job(ctx, "stop", name, b.conn.StopUnitContext)
}

// RestartUnit implements Units.
func (b *Bus) RestartUnit(ctx context.Context, name string) error {
	return b.job(ctx, "restart", name, b.conn.RestartUnitContext)
}

// TryRestartUnit implements Units.
func (b *Bus) TryRestartUnit(ctx context.Context, name string) error {
	return b.job(ctx, "try-restart", name, b.conn.TryRestartUnitContext)
}

// EnqueueRestartUnit implements Units: no job channel, so nothing waits for
// the job (and go-systemd keeps no listener for it).
func (b *Bus) EnqueueRestartUnit(ctx context.Context, name string) error {
	if _, err := b.conn.RestartUnitContext(ctx, name, "replace", nil); err != nil {
		return fmt.Errorf("restart %s: %w", name, err)
	}
	return nil
}

// ResetFailedUnit implements Units.
func (b *Bus) ResetFailedUnit(ctx context.Context, name string) error {
	if err := b.conn.ResetFailedUnitContext(ctx, name); err != nil {
		return fmt.Errorf("reset-failed %s: %w", name, err)
	}
	return nil
}

// jobError turns a job result other than "done" into an error.
func jobError(verb, unit, result string) error {
	if result == "done" {
		return nil
	}
	return fmt.Errorf("%s %s: job %s", verb, unit, result)
}

// EnqueueStartUnit implements Units: no job channel, nothing waits.
func (b *Bus) EnqueueStartUnit(ctx context.Context, name string) error {
	if _, err := b.conn.StartUnitContext(ctx, name, "replace", nil); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	return nil
}

// EnqueueStopUnit implements Units: no job channel, nothing waits.
func (b *Bus) EnqueueStopUnit(ctx context.Context, name string) error {
	if _, err := b.conn.StopUnitContext(ctx, name, "replace", nil); err != nil {
		return fmt.Errorf("stop %s: %w", name, err)
	}
	return nil
}
