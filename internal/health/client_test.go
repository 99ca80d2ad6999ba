package health

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lodis/lodis/internal/sockets"
)

func TestDialAddr(t *testing.T) {
	for _, c := range []struct{ listen, want string }{
		{"[::]:8080", "127.0.0.1:8080"}, {"0.0.0.0:8080", "127.0.0.1:8080"}, {":8080", "127.0.0.1:8080"},
		{"127.0.0.2:8080", "127.0.0.2:8080"}, {"[::1]:8080", "[::1]:8080"}, {"", "127.0.0.1:8080"}, {"junk", "127.0.0.1:8080"},
	} {
		if got := DialAddr(c.listen, "8080"); got != c.want {
			t.Errorf("DialAddr(%q) = %q, want %q", c.listen, got, c.want)
		}
	}
}

func TestClient(t *testing.T) {
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != Path {
			http.NotFound(w, r)
			return
		}
		fmt.Fprint(w, `{"status":"ok","pid":12,"version":"1.0"}`)
	}))
	defer ok.Close()
	notJSON := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "hello") }))
	defer notJSON.Close()
	sick := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"status":"unhealthy"}`, http.StatusServiceUnavailable)
	}))
	defer sick.Close()
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	defer hang.Close()
	c := &Client{Timeout: 100 * time.Millisecond}
	ctx := context.Background()
	get := func(s *httptest.Server) (Report, error) {
		r, _, err := c.Get(ctx, s.Listener.Addr().String(), "", "")
		return r, err
	}
	if h, err := get(ok); err != nil || h.PID != 12 || h.Status != "ok" {
		t.Errorf("healthy: %+v %v", h, err)
	}
	if _, err := get(notJSON); err == nil {
		t.Error("a non-JSON answer passed the check")
	}
	var se *StatusError
	if _, err := get(sick); !errors.As(err, &se) || se.Status != "503 Service Unavailable" {
		t.Errorf("503: %v, want a *StatusError", err)
	}
	start := time.Now()
	if _, err := get(hang); err == nil {
		t.Error("a hanging worker passed the check")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("check of a hanging worker took %s, want about the 100 ms timeout", d)
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	if _, _, err := c.Get(ctx, addr, "", ""); err == nil {
		t.Error("a closed port passed the check")
	}
}

// TestGetHeldSeesTheServerEndOfAClosingServer: a server that hangs up after
// each answer (as HTTP/1.0 ones do) still holds the connection when inspect
// runs, so inspect can tell which process accepted it.
func TestGetHeldSeesTheServerEndOfAClosingServer(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		fmt.Fprint(w, `{"status":"ok","pid":1}`)
	}))
	defer srv.Close()
	listen := srv.Listener.Addr().String()
	_, port, _ := net.SplitHostPort(listen)
	var c Client
	for i := range 20 {
		_, _, err := c.GetHeld(t.Context(), listen, port, "", func(local, remote net.Addr) error {
			pid, err := sockets.Owner(local, remote, []int{os.Getpid()})
			for deadline := time.Now().Add(5 * time.Second); errors.Is(err, sockets.ErrNotAccepted) && time.Now().Before(deadline); {
				time.Sleep(time.Millisecond)
				pid, err = sockets.Owner(local, remote, []int{os.Getpid()})
			}
			if err != nil {
				return err
			}
			if pid != os.Getpid() {
				return fmt.Errorf("owner %d, want this process %d", pid, os.Getpid())
			}
			return nil
		})
		if err != nil {
			t.Fatalf("check %d: %v", i, err)
		}
	}
}

// TestGetHeldInspectErrorSendsNoRequest: an error from inspect is returned
// as it is and the request is never sent.
func TestGetHeldInspectErrorSendsNoRequest(t *testing.T) {
	var requests atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		fmt.Fprint(w, `{"status":"ok"}`)
	}))
	defer srv.Close()
	listen := srv.Listener.Addr().String()
	_, port, _ := net.SplitHostPort(listen)
	errNotMine := errors.New("not mine")
	var c Client
	_, _, err := c.GetHeld(t.Context(), listen, port, "", func(net.Addr, net.Addr) error { return errNotMine })
	if err != errNotMine {
		t.Fatalf("err = %v, want inspect's error as it is", err)
	}
	if n := requests.Load(); n != 0 {
		t.Errorf("%d requests reached the server, want none", n)
	}
}
