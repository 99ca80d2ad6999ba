package events

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
)

// DefaultHookTimeout bounds one run of the --on-event script.
const DefaultHookTimeout = 10 * time.Second

// Hook runs a script once per event, with the event in its environment (see
// Event.Env, added to the supervisor's own environment). It never blocks
// the emitter: events wait in a bounded queue, at most Parallel scripts run at
// once, each is killed after Timeout with its whole process group, and events
// that find the queue full are dropped and counted. Failures (exit status, timeout, script gone) are logged,
// never fatal.
type Hook struct {
	Path     string        // the script; must be an executable file
	Timeout  time.Duration // per run; default DefaultHookTimeout
	Parallel int           // concurrent runs; default 2
	Queue    int           // events waiting; default 256
	Log      logrus.FieldLogger
	// Done, if set, is called after each run with its outcome: "ok", "failed",
	// "timeout" or "dropped".
	Done func(e Event, outcome string, err error)

	ch      chan Event
	dropped atomic.Uint64
	once    sync.Once
	wg      sync.WaitGroup
}

// CheckHook reports, as a one-line error, why path cannot serve as a hook:
// missing, not a regular file, or not executable.
func CheckHook(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("hook %s: %w", path, errors.Unwrap(err))
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("hook %s: not a regular file", path)
	}
	if st.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("hook %s: not executable (chmod +x it)", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("hook %s: not readable: %w", path, errors.Unwrap(err))
	}
	f.Close()
	return nil
}

// Start launches the runners; they stop when ctx is cancelled (a running
// script is then killed). Call Wait to wait for them.
func (h *Hook) Start(ctx context.Context) {
	if h.Timeout <= 0 {
		h.Timeout = DefaultHookTimeout
	}
	if h.Parallel <= 0 {
		h.Parallel = 2
	}
	if h.Queue <= 0 {
		h.Queue = 256
	}
	h.ch = make(chan Event, h.Queue)
	for i := 0; i < h.Parallel; i++ {
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case e := <-h.ch:
					h.run(ctx, e)
				}
			}
		}()
	}
}

// Wait waits for the runners to stop after their context is cancelled.
func (h *Hook) Wait() { h.wg.Wait() }

// Offer queues e for the script without blocking; it reports false when the
// queue was full and the event was dropped.
func (h *Hook) Offer(e Event) bool {
	select {
	case h.ch <- e:
		return true
	default:
		if h.dropped.Add(1) == 1 || h.dropped.Load()%100 == 0 {
			h.Log.WithField("dropped", h.dropped.Load()).Warn("event hook queue full; dropping events")
		}
		if h.Done != nil {
			h.Done(e, "dropped", nil)
		}
		return false
	}
}

func (h *Hook) run(ctx context.Context, e Event) {
	ctx, cancel := context.WithTimeout(ctx, h.Timeout)
	defer cancel()
	c := exec.CommandContext(ctx, h.Path)
	c.Env = append(os.Environ(), e.Env()...)
	// The script and everything it started are one process group, killed
	// whole at the timeout: no child outlives it.
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.Cancel = func() error { return syscall.Kill(-c.Process.Pid, syscall.SIGKILL) }
	c.WaitDelay = time.Second // a script's children holding its output do not hold us
	var out strings.Builder
	lw := &limited{w: &out, n: 512}
	c.Stdout, c.Stderr = lw, lw // one writer: exec then copies through a single pipe
	start := time.Now()
	err := c.Run()
	outcome := "ok"
	l := h.Log.WithFields(logrus.Fields{"hook": h.Path, "seq": e.Seq, "took": time.Since(start).Round(time.Millisecond)})
	switch {
	case ctx.Err() == context.DeadlineExceeded:
		outcome, err = "timeout", fmt.Errorf("hook %s: killed after %s", h.Path, h.Timeout)
		l.Warn(err.Error())
	case err != nil:
		outcome, err = "failed", fmt.Errorf("hook %s: %w", h.Path, err)
		l.WithField("output", strings.TrimSpace(out.String())).Warn(err.Error())
	default:
		l.Debug("event hook ran")
	}
	if h.Done != nil {
		h.Done(e, outcome, err)
	}
}

// limited keeps the first n bytes written and discards the rest.
type limited struct {
	w *strings.Builder
	n int
}

func (l *limited) Write(p []byte) (int, error) {
	if room := l.n - l.w.Len(); room > 0 {
		if len(p) > room {
			l.w.Write(p[:room])
		} else {
			l.w.Write(p)
		}
	}
	return len(p), nil
}
