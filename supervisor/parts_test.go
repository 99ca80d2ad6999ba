package supervisor

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/lodis/lodis/internal/statusapi"
	"github.com/lodis/lodis/internal/systemd"
)

func TestClassify(t *testing.T) {
	for _, c := range []struct {
		typ, from string
		u         systemd.UnitState
		want      remedy
		msg       string
	}{
		{"socket", "active/listening", systemd.UnitState{ActiveState: "failed", SubState: "failed", Result: "trigger-limit-hit"}, remedyRecoverSocket, "trigger-limit-hit"},
		{"socket", "active/running", systemd.UnitState{ActiveState: "failed", SubState: "failed", Result: "service-start-limit-hit"}, remedyRecoverSocket, "refuses"},
		{"socket", "active/listening", systemd.UnitState{ActiveState: "inactive", SubState: "dead", Result: "success"}, remedyNone, "left stopped"},
		{"socket", "", systemd.UnitState{ActiveState: "inactive", SubState: "dead"}, remedyNone, ""},
		{"service", "active/running", systemd.UnitState{ActiveState: "failed", SubState: "failed", Result: "signal"}, remedyResetService, "signal"},
		{"service", "active/running", systemd.UnitState{ActiveState: "inactive", SubState: "dead", Result: "success"}, remedyNone, "idle"},
		{"service", "inactive/dead", systemd.UnitState{ActiveState: "active", SubState: "running", MainPID: 9}, remedyNone, "pid 9"},
	} {
		msg, r := classify(c.typ, c.from, c.u)
		if r != c.want || !strings.Contains(msg, c.msg) {
			t.Errorf("classify(%s, %q, %s/%s %s) = %q, %v; want %v and %q", c.typ, c.from, c.u.ActiveState, c.u.SubState, c.u.Result, msg, r, c.want, c.msg)
		}
	}
}

func TestBackoff(t *testing.T) {
	var b backoff
	now := time.Now()
	var got []time.Duration
	for i := 0; i < 9; i++ {
		got = append(got, b.next(now, time.Minute, 30*time.Second))
		now = now.Add(time.Second)
	}
	want := []time.Duration{0, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second, 30 * time.Second}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("backoff %v, want %v", got, want)
		}
	}
	if d := b.next(now.Add(2*time.Minute), time.Minute, 30*time.Second); d != 0 {
		t.Errorf("after a quiet minute the streak should end; got delay %v", d)
	}
}

func TestAPI(t *testing.T) {
	f := newFake(socketState("8080", "active", "listening", "success"))
	h := startHarness(t, Options{}, f)
	h.waitFor("connected", func() bool { s, _ := h.sup.Snapshot(context.Background()); return s.Connected && len(s.Instances) == 1 })
	api := &statusapi.Server{Sup: h.sup, Events: h.events, Metrics: h.sup.o.Metrics, Log: quietLog(), Version: "v1"}
	api.Handle("POST /v1/rollout", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "rolling") }))
	srv := httptest.NewServer(api.Handler())
	defer srv.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := get("/v1/instances")
	var snap statusapi.Snapshot
	if err := json.Unmarshal([]byte(body), &snap); code != 200 || err != nil || snap.Version != "v1" || len(snap.Instances) != 1 || snap.Instances[0].Socket != "active/listening" {
		t.Errorf("/v1/instances: %d %s", code, body)
	}
	if code, body := get("/v1/events?since=1"); code != 200 || strings.Contains(body, `"seq": 1,`) || !strings.Contains(body, `"seq": 2`) {
		t.Errorf("/v1/events?since=1: %d %s", code, body)
	}
	if code, body := get("/v1/events?since=x"); code != 400 || !strings.Contains(body, "bad since") {
		t.Errorf("bad since: %d %s", code, body)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, `lodis_socket_state{port="8080",state="active"} 1`) || !strings.Contains(body, `lodis_worker_state{port="8080",state="inactive"} 1`) || !strings.Contains(body, "lodis_bus_connected 1") {
		t.Errorf("/metrics: %d %s", code, body)
	}
	resp, err := http.Post(srv.URL+"/v1/rollout", "text/plain", nil)
	if err != nil || resp.StatusCode != 200 {
		t.Errorf("extra handler: %v %v", resp, err)
	}
}
