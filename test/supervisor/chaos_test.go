package supervisor_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lodis/lodis/test/machine"
)

const nginxConf = `worker_processes 1;
pid /run/lodis-test-nginx.pid;
error_log /run/lodis-test-nginx.err warn;
events { worker_connections 2048; }
http {
    access_log off;
    include /etc/lodis-test/lodis-nginx.conf;
}
`

// The lodis chaos demo: 10 workers that each abort with probability 0.5 every
// second, behind nginx configured by `lodis nginx-config`, under a fixed
// request rate for 30 s. No port may refuse connections for more than 1 s,
// and at least 99.9 % of the requests through nginx must succeed.
func TestChaosThroughNginx(t *testing.T) {
	const first, n, front = 18270, 10, 18280
	const rate, dur = 200, 30 * time.Second
	ctx := context.Background()
	var units []string
	for p := first; p < first+n; p++ {
		dropIn := "[Service]\nExecStart=\nExecStart=/var/lib/lodis/current serve --port %i --chaos-abort-rate 0.5\n"
		if err := m.WriteFile(fmt.Sprintf("/etc/systemd/system/lodis@%d.service.d/chaos.conf", p), []byte(dropIn), 0o644); err != nil {
			t.Fatal(err)
		}
		units = append(units, fmt.Sprintf("lodis@%d.socket", p))
	}
	t.Cleanup(func() {
		m.Systemctl(ctx, "stop", "lodis-test-nginx.service")
		m.Systemctl(ctx, append([]string{"disable", "--now"}, units...)...)
		m.Sh(ctx, fmt.Sprintf("rm -rf /etc/systemd/system/lodis@%d*.service.d && systemctl daemon-reload && systemctl reset-failed 'lodis@*'", first/10))
	})
	if _, err := m.Systemctl(ctx, "daemon-reload"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Systemctl(ctx, append([]string{"enable", "--now"}, units...)...); err != nil {
		t.Fatal(err)
	}
	conf, err := m.Output(ctx, "lodis", "nginx-config", "--listen", fmt.Sprintf("127.0.0.1:%d", front))
	if err != nil {
		t.Fatal(err)
	}
	for p := first; p < first+n; p++ {
		if !strings.Contains(conf, fmt.Sprintf("server 127.0.0.1:%d ", p)) {
			t.Fatalf("nginx-config lacks enabled port %d:\n%s", p, conf)
		}
	}
	if err := m.WriteFile("/etc/lodis-test/lodis-nginx.conf", []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := m.WriteFile("/etc/lodis-test/nginx.conf", []byte(nginxConf), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Output(ctx, "systemd-run", "--unit=lodis-test-nginx", "--collect",
		"nginx", "-c", "/etc/lodis-test/nginx.conf", "-g", "daemon off;"); err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/__/time", front)
	if err := machine.WaitFor(ctx, 10*time.Second, func() (bool, string) {
		resp, err := machine.Client.Get(url)
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == 200, resp.Status
	}); err != nil {
		t.Fatalf("nginx does not answer: %v (%s)", err, m.Prop(ctx, "lodis-test-nginx.service", "ActiveState"))
	}
	after := lastSeq(t)

	// Refusal watch: one connect per port every 100 ms.
	lctx, stop := context.WithTimeout(ctx, dur)
	defer stop()
	var wg sync.WaitGroup
	worst := make([]time.Duration, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var since time.Time
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-lctx.Done():
					return
				case <-tick.C:
				}
				if refuses(first + i) {
					if since.IsZero() {
						since = time.Now()
					}
					worst[i] = max(worst[i], time.Since(since))
				} else {
					since = time.Time{}
				}
			}
		}()
	}
	// Load: a fixed rate through nginx, keep-alive on.
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	tick := time.NewTicker(time.Second / rate)
load:
	for {
		select {
		case <-lctx.Done():
			break load
		case <-tick.C:
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := client.Get(url)
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					err = fmt.Errorf("%s", resp.Status)
				}
			}
			if err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
				return
			}
			ok.Add(1)
		}()
	}
	tick.Stop()
	wg.Wait()
	total := ok.Load() + failed.Load()
	ratio := float64(ok.Load()) / float64(total)
	crashes := 0
	for _, e := range events(t, 0, after) {
		if e.To == "failed/failed" && strings.HasSuffix(e.Unit, ".service") {
			crashes++
		}
	}
	t.Logf("%d requests through nginx in %s: %d ok, %d failed (%.4f%% ok); %d worker crashes seen by the supervisor; longest refusal per port %v",
		total, dur, ok.Load(), failed.Load(), 100*ratio, crashes, worst)
	if total < int64(rate*dur.Seconds()*0.9) {
		t.Errorf("only %d requests sent, want about %d", total, int(rate*dur.Seconds()))
	}
	if ratio < 0.999 {
		t.Errorf("success ratio through nginx %.4f%% < 99.9%% (first error: %v)", 100*ratio, firstErr.Load())
	}
	if crashes < 10 {
		t.Errorf("only %d worker crashes in %s of chaos: the chaos did not happen", crashes, dur)
	}
	for i, w := range worst {
		if w > time.Second {
			t.Errorf("port %d refused connections for %s in a row", first+i, w)
		}
	}
}
