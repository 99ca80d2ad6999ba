package testenv

import (
	"context"
	"fmt"
	"time"
)

// WaitInterval is the pause WaitFor makes between two calls of its condition.
const WaitInterval = 50 * time.Millisecond

// WaitFor polls cond, pausing WaitInterval after each call, until it returns
// true or timeout passes; the error then carries cond's last description of
// what it saw.
func WaitFor(ctx context.Context, timeout time.Duration, cond func() (bool, string)) error {
	return Poll(ctx, timeout, WaitInterval, cond)
}

// Poll is WaitFor with another pause, e.g. a few milliseconds for a
// benchmark that measures a window. It also ends when ctx does.
func Poll(ctx context.Context, timeout, interval time.Duration, cond func() (bool, string)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		ok, desc := cond()
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("after %s: %s", timeout, desc)
		case <-time.After(interval):
		}
	}
}
