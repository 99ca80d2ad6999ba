package load

import "context"

// Background runs Run(ctx, o) in a goroutine of its own and returns stop,
// which ends the load (cancelling what is in flight, as cancelling ctx does)
// and returns Run's partial Result and error. stop may be called once.
func Background(ctx context.Context, o Options) (stop func() (*Result, error)) {
	ctx, cancel := context.WithCancel(ctx)
	type outcome struct {
		res *Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		r, err := Run(ctx, o)
		done <- outcome{r, err}
	}()
	return func() (*Result, error) {
		cancel()
		o := <-done
		return o.res, o.err
	}
}
