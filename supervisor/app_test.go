package supervisor

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lodis/lodis/internal/events"
	"github.com/lodis/lodis/internal/sockets"
	"github.com/lodis/lodis/internal/systemd"
)

// TestAnyAppIsProbedOnItsHealthPath: an app that answers its own health
// path with 2xx and a body that is no lodis report is healthy; it is
// probed there and nowhere else.
func TestAnyAppIsProbedOnItsHealthPath(t *testing.T) {
	var wrong atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			wrong.Add(1)
			http.NotFound(w, r)
			return
		}
		fmt.Fprint(w, "ok\n")
	}))
	defer srv.Close()
	svc := serviceState("8090", "active", "running", "success", 9)
	svc.Environment = []string{"LODIS_PORT=8090", "LODIS_HEALTH_PATH=/healthz", "LODIS_READY=health"}
	f := newFake(socketState("8090", "active", "running", "success"), svc)
	f.listen[systemd.SocketUnit("8090")] = srv.Listener.Addr().String()
	h := startHarness(t, Options{ProbeInterval: 50 * time.Millisecond, ProbeTimeout: time.Second}, f)
	h.waitFor("a healthy probe", func() bool {
		s, _ := h.sup.Snapshot(context.Background())
		return len(s.Instances) == 1 && s.Instances[0].Health != nil && s.Instances[0].Health.OK
	})
	if n := wrong.Load(); n != 0 {
		t.Fatalf("%d probes went elsewhere than /healthz", n)
	}
}

// TestIdleAppIsStopped: a worker whose port had no established connection
// for its app's IDLE_TIMEOUT is stopped; one with a connection is not.
func TestIdleAppIsStopped(t *testing.T) {
	var conns atomic.Int32
	conns.Store(1)
	svc := serviceState("8091", "active", "running", "success", 11)
	svc.Environment = []string{"LODIS_PORT=8091", "LODIS_IDLE_TIMEOUT=300ms"}
	f := newFake(socketState("8091", "active", "running", "success"), svc)
	count := func(ports map[string]bool) (map[string]sockets.Counts, error) {
		return map[string]sockets.Counts{"8091": {Established: int(conns.Load()), Active: int(conns.Load())}}, nil
	}
	h := startHarness(t, Options{ProbeInterval: time.Hour, Sockets: count}, f)
	h.waitFor("watching", func() bool { s, _ := h.sup.Snapshot(context.Background()); return len(s.Instances) == 1 })
	time.Sleep(time.Second) // a count every 500 ms
	if contains(f.Calls(), "stop lodis@8091.service") {
		t.Fatal("a worker with a connection was stopped as idle")
	}
	conns.Store(0)
	h.waitFor("the idle stop", func() bool { return contains(f.Calls(), "stop lodis@8091.service") })
	if _, ok := h.find(func(e events.Event) bool { return e.Action == "idle-stop" && e.Result == "done" }); !ok {
		t.Errorf("no idle-stop event:%s", h.describe())
	}
}
