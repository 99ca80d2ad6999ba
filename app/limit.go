package app

import (
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// limitWarnEvery is the least time between two "connection limit reached"
// warnings: a flood must not flood the journal as well.
const limitWarnEvery = time.Minute

// limiter hands out the slots of MaxConns, shared by every listener of an App.
type limiter struct {
	slots    chan struct{}
	open     atomic.Int64 // connections accepted and not yet closed, never above cap(slots)
	log      *slog.Logger
	lastWarn atomic.Int64 // unix nanoseconds of the last warning
}

func newLimiter(n int, log *slog.Logger) *limiter {
	return &limiter{slots: make(chan struct{}, n), log: log}
}

// full logs that the cap is reached, at most once per limitWarnEvery.
func (l *limiter) full() {
	now := time.Now().UnixNano()
	last := l.lastWarn.Load()
	if now-last < int64(limitWarnEvery) || !l.lastWarn.CompareAndSwap(last, now) {
		return
	}
	l.log.Warn("connection limit reached; new connections wait in the kernel's accept queue until one closes",
		"max_conns", cap(l.slots))
}

// limitListener takes a connection from the kernel only once it holds a
// slot, so that beyond the cap connections wait in the accept queue, where
// the next worker or a freed slot finds them, instead of being accepted and
// starved.
type limitListener struct {
	net.Listener
	lim       *limiter
	done      chan struct{}
	closeOnce sync.Once
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.lim.slots <- struct{}{}:
	default:
		l.lim.full()
		select {
		case l.lim.slots <- struct{}{}:
		case <-l.done:
			return nil, net.ErrClosed
		}
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.lim.slots
		return nil, err
	}
	l.lim.open.Add(1)
	return &limitConn{Conn: c, lim: l.lim}, nil
}

// Close closes the listener and wakes an Accept waiting for a slot.
func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// limitConn gives its slot back when it is closed, once.
type limitConn struct {
	net.Conn
	lim     *limiter
	release sync.Once
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.release.Do(func() {
		c.lim.open.Add(-1)
		<-c.lim.slots
	})
	return err
}

// ReadFrom and CloseWrite pass through to the connection underneath, so that
// net/http keeps using sendfile and its lingering close on a capped
// connection as it does on a bare one.

func (c *limitConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(c.Conn, r)
}

func (c *limitConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
