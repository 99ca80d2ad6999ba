package upgrade

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// load sends GET / to each port at a fixed rate over keep-alive connections,
// like wrk and unlike net/http's client it never retries: a request that
// gets no complete 200 answer — a reset, a connection closed before the
// answer, another status — is a failure. A "Connection: close" answer is
// honoured by opening a new connection for the next request.
type load struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	errs       []string
	wg         sync.WaitGroup
	cancel     context.CancelFunc
}

// startLoad starts conns connections per port, each sending one request
// every interval.
func startLoad(ports []int, conns int, interval time.Duration) *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{cancel: cancel}
	for _, p := range ports {
		for range conns {
			l.wg.Add(1)
			go l.client(ctx, fmt.Sprintf("127.0.0.1:%d", p), interval)
		}
	}
	return l
}

func (l *load) client(ctx context.Context, addr string, interval time.Duration) {
	defer l.wg.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	var c net.Conn
	var r *bufio.Reader
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if c == nil {
			var err error
			c, err = net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				l.fail(addr, "dial: "+err.Error())
				c = nil
				continue
			}
			r = bufio.NewReader(c)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		_, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: "+addr+"\r\nUser-Agent: lodis-upgrade-test\r\n\r\n")
		var resp *http.Response
		if err == nil {
			resp, err = http.ReadResponse(r, nil)
		}
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		switch {
		case err != nil:
			l.fail(addr, err.Error())
			c.Close()
			c = nil
			continue
		case resp.StatusCode != http.StatusOK:
			l.fail(addr, resp.Status)
		default:
			l.ok.Add(1)
		}
		if resp.Close {
			c.Close()
			c = nil
		}
	}
}

func (l *load) fail(addr, what string) {
	l.failed.Add(1)
	l.mu.Lock()
	if len(l.errs) < 20 {
		l.errs = append(l.errs, time.Now().Format("15:04:05.000")+" "+addr+": "+what)
	}
	l.mu.Unlock()
}

// stop ends the load and returns the counts and the first errors.
func (l *load) stop() (ok, failed int64, errs []string) {
	l.cancel()
	l.wg.Wait()
	return l.ok.Load(), l.failed.Load(), l.errs
}
