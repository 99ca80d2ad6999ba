package upgrade

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/lodis/lodis/internal/statusapi"
)

// holdTTL is the lease of a hold of the supervisor's worker remedies: it is
// renewed every holdTTL/3 while the roll-out runs, and ends by itself when
// this process dies.
const holdTTL = 60 * time.Second

// holdSupervisor asks the supervisor to hold its worker remedies while the
// roll-out restarts workers on purpose, and renews the hold until the
// returned function is called. A supervisor that does not answer is not
// waited for: the roll-out goes on, and says so.
func (u *Upgrader) holdSupervisor(ctx context.Context, who string) (release func()) {
	if u.StatusSocket == "" {
		return func() {}
	}
	c := statusapi.NewClient(u.StatusSocket)
	ask := func(ctx context.Context, ttl time.Duration) error {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if ttl == 0 {
			return c.Do(ctx, http.MethodDelete, "/v1/hold", nil, nil)
		}
		return c.Post(ctx, "/v1/hold", statusapi.HoldRequest{Who: who, Seconds: int(ttl / time.Second)}, nil)
	}
	if err := ask(ctx, holdTTL); err != nil {
		u.Log.WithError(err).Warn("the supervisor did not take the hold of its worker remedies: rolling out without it")
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(holdTTL / 3)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				ask(ctx, holdTTL)
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(stop)
			wg.Wait()
			ask(context.WithoutCancel(ctx), 0)
		})
	}
}
