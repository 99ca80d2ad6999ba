package supervisor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
)

func TestClassify(t *testing.T) {
	for _, c := range []struct {
		typ, from string
		u         UnitState
		want      remedy
		msg       string
	}{
		{"socket", "active/listening", UnitState{ActiveState: "failed", SubState: "failed", Result: "trigger-limit-hit"}, remedyRecoverSocket, "trigger-limit-hit"},
		{"socket", "active/running", UnitState{ActiveState: "failed", SubState: "failed", Result: "service-start-limit-hit"}, remedyRecoverSocket, "refuses"},
		{"socket", "active/listening", UnitState{ActiveState: "inactive", SubState: "dead", Result: "success"}, remedyNone, "left stopped"},
		{"socket", "", UnitState{ActiveState: "inactive", SubState: "dead"}, remedyNone, ""},
		{"service", "active/running", UnitState{ActiveState: "failed", SubState: "failed", Result: "signal"}, remedyResetService, "signal"},
		{"service", "active/running", UnitState{ActiveState: "inactive", SubState: "dead", Result: "success"}, remedyNone, "idle"},
		{"service", "inactive/dead", UnitState{ActiveState: "active", SubState: "running", MainPID: 9}, remedyNone, "pid 9"},
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

func TestEventsRing(t *testing.T) {
	ev := NewEvents(3, nil)
	var seen []uint64
	ev.Subscribe(func(e Event) { seen = append(seen, e.Seq) })
	for i := 0; i < 5; i++ {
		ev.Emit(Event{Kind: KindState, Instance: "80"})
	}
	got := ev.Since(0)
	if len(got) != 3 || got[0].Seq != 3 || got[2].Seq != 5 {
		t.Errorf("ring kept %+v, want seq 3..5", got)
	}
	if s := ev.Since(4); len(s) != 1 || s[0].Seq != 5 {
		t.Errorf("Since(4) = %+v", s)
	}
	if len(seen) != 5 || got[0].Time.IsZero() {
		t.Errorf("subscriber saw %v; time stamped: %v", seen, !got[0].Time.IsZero())
	}
	env := strings.Join(Event{Seq: 7, Kind: "remedy", Instance: "8080", Action: "restart"}.Env(), "\n")
	for _, w := range []string{"LODIS_EVENT_SEQ=7", "LODIS_EVENT_KIND=remedy", "LODIS_EVENT_INSTANCE=8080", "LODIS_EVENT_ACTION=restart", "LODIS_EVENT_FROM="} {
		if !strings.Contains(env, w) {
			t.Errorf("env lacks %s:\n%s", w, env)
		}
	}
}

func writeScript(t *testing.T, body string, mode os.FileMode) string {
	p := filepath.Join(t.TempDir(), "hook.sh")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), mode); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCheckHook(t *testing.T) {
	if err := CheckHook(writeScript(t, "exit 0\n", 0o755)); err != nil {
		t.Errorf("good hook: %v", err)
	}
	for _, c := range []struct{ path, want string }{
		{"/nonexistent/hook", "no such file"},
		{t.TempDir(), "not a regular file"},
		{writeScript(t, "exit 0\n", 0o644), "not executable"},
	} {
		err := CheckHook(c.path)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("CheckHook(%s) = %v, want one line with %q", c.path, err, c.want)
		}
	}
}

func TestHookOutcomes(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	// A hook that ends by itself gets a timeout no busy machine reaches; the
	// hanging one a short one.
	for _, c := range []struct {
		name, body string
		timeout    time.Duration
		want       string
	}{
		{"ok", "echo \"$LODIS_EVENT_KIND $LODIS_EVENT_INSTANCE\" > " + out + "\n", 20 * time.Second, "ok"},
		{"fails", "exit 3\n", 20 * time.Second, "failed"},
		{"hangs", "exec sleep 30\n", 200 * time.Millisecond, "timeout"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var mu sync.Mutex
			var outcome string
			var err error
			done := make(chan struct{})
			h := &Hook{Path: writeScript(t, c.body, 0o755), Timeout: c.timeout, Log: quietLog(),
				Done: func(_ Event, o string, e error) { mu.Lock(); outcome, err = o, e; mu.Unlock(); close(done) }}
			ctx, cancel := context.WithCancel(context.Background())
			defer func() { cancel(); h.Wait() }()
			h.Start(ctx)
			start := time.Now()
			if !h.Offer(Event{Kind: "state", Instance: "8080"}) {
				t.Fatal("queue refused the first event")
			}
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("hook never finished")
			}
			mu.Lock()
			defer mu.Unlock()
			if outcome != c.want {
				t.Errorf("outcome %q (%v), want %q", outcome, err, c.want)
			}
			if c.want == "timeout" && time.Since(start) > 15*time.Second {
				t.Errorf("a hanging hook held on for %s despite a 200 ms timeout", time.Since(start))
			}
			if c.want == "ok" {
				if b, _ := os.ReadFile(out); string(b) != "state 8080\n" {
					t.Errorf("hook saw %q, want the event in its environment", b)
				}
			}
		})
	}
}

func TestHookNeverBlocks(t *testing.T) {
	h := &Hook{Path: writeScript(t, "exec sleep 30\n", 0o755), Timeout: 10 * time.Second, Parallel: 1, Queue: 2, Log: quietLog()}
	ctx, cancel := context.WithCancel(context.Background())
	h.Start(ctx)
	start := time.Now()
	dropped := 0
	for i := 0; i < 50; i++ {
		if !h.Offer(Event{Seq: uint64(i)}) {
			dropped++
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("offering 50 events to a stuck hook took %s: Offer blocked", d)
	}
	if dropped < 45 {
		t.Errorf("dropped %d of 50 events with a queue of 2 and a stuck hook, want ≥ 45", dropped)
	}
	cancel()
	h.Wait()
}

func TestParseUnitAndPaths(t *testing.T) {
	for _, c := range []struct {
		name, port, typ string
		ok              bool
	}{
		{"lodis@8080.socket", "8080", "socket", true}, {"lodis@1.service", "1", "service", true},
		{"lodis@0.socket", "", "", false}, {"lodis@65536.socket", "", "", false}, {"lodis@x.socket", "", "", false},
		{"lodis@8080.timer", "", "", false}, {"lodis-supervisor.service", "", "", false}, {"nginx.service", "", "", false},
	} {
		port, typ, ok := ParseUnit(c.name)
		if port != c.port || typ != c.typ || ok != c.ok {
			t.Errorf("ParseUnit(%q) = %q %q %v", c.name, port, typ, ok)
		}
	}
	if n := unescapeUnitPath("/org/freedesktop/systemd1/unit/lodis_408080_2esocket"); n != "lodis@8080.socket" {
		t.Errorf("unescape: %q", n)
	}
}

func TestDecodeSignal(t *testing.T) {
	c, ok := decodeSignal(propsSignal("lodis@8080.service", "org.freedesktop.systemd1.Service",
		map[string]any{"Result": "signal", "MainPID": uint32(0), "ExecMainStatus": int32(9)}))
	if !ok || c.Unit != "lodis@8080.service" || c.Props["Result"] != "signal" || len(c.Props) != 2 {
		t.Errorf("decoded %+v %v", c, ok)
	}
	if _, ok := decodeSignal(propsSignal("nginx.service", unitIface, map[string]any{"ActiveState": "failed"})); ok {
		t.Error("a signal about nginx.service was taken for lodis")
	}
	if _, ok := decodeSignal(&dbus.Signal{Name: managerIface + ".UnitRemoved", Body: []any{"sshd.service", dbus.ObjectPath("/x")}}); ok {
		t.Error("UnitRemoved of another unit was taken for lodis")
	}
	r, ok := decodeSignal(&dbus.Signal{Name: managerIface + ".UnitRemoved", Body: []any{"lodis@80.socket", dbus.ObjectPath("/x")}})
	if !ok || !r.Removed || r.Unit != "lodis@80.socket" {
		t.Errorf("UnitRemoved decoded as %+v %v", r, ok)
	}
	var u UnitState
	applyProps(&u, map[string]any{"ActiveState": "active", "SubState": "running", "MainPID": uint32(5), "ActiveEnterTimestamp": uint64(1_700_000_000_000_000)})
	if u.State() != "active/running" || u.MainPID != 5 || u.ActiveEnter.Unix() != 1_700_000_000 {
		t.Errorf("applyProps gave %+v", u)
	}
}

func TestWhere(t *testing.T) {
	if w := (BusOptions{Address: "unix:path=/x"}).Where(); len(w) != 1 || w[0] != "unix:path=/x" {
		t.Errorf("explicit address: %v", w)
	}
	t.Setenv("XDG_RUNTIME_DIR", "/run/user/1000")
	t.Setenv("DBUS_SESSION_BUS_ADDRESS", "")
	if w := (BusOptions{User: true}).Where(); len(w) != 2 || w[1] != "unix:path=/run/user/1000/systemd/private" {
		t.Errorf("user manager: %v", w)
	}
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", "")
	w := (BusOptions{}).Where()
	if w[len(w)-1] != "unix:path=/run/dbus/system_bus_socket" || (os.Geteuid() == 0) != (len(w) == 2) {
		t.Errorf("system manager: %v", w)
	}
}

func TestAPI(t *testing.T) {
	f := newFake(socketState("8080", "active", "listening", "success"))
	h := startHarness(t, Options{}, f)
	h.waitFor("connected", func() bool { s, _ := h.sup.Snapshot(context.Background()); return s.Connected && len(s.Instances) == 1 })
	api := &API{Sup: h.sup, Events: h.events, Metrics: h.sup.o.Metrics, Log: quietLog(), Version: "v1"}
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
	var snap Snapshot
	if err := json.Unmarshal([]byte(body), &snap); code != 200 || err != nil || snap.Version != "v1" || len(snap.Instances) != 1 || snap.Instances[0].Socket != "active/listening" {
		t.Errorf("/v1/instances: %d %s", code, body)
	}
	if code, body := get("/v1/events?since=1"); code != 200 || strings.Contains(body, `"seq": 1,`) || !strings.Contains(body, `"seq": 2`) {
		t.Errorf("/v1/events?since=1: %d %s", code, body)
	}
	if code, body := get("/v1/events?since=x"); code != 400 || !strings.Contains(body, "bad since") {
		t.Errorf("bad since: %d %s", code, body)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, `lodis_instances{socket="active",worker="inactive"} 1`) || !strings.Contains(body, "lodis_bus_connected 1") {
		t.Errorf("/metrics: %d %s", code, body)
	}
	resp, err := http.Post(srv.URL+"/v1/rollout", "text/plain", nil)
	if err != nil || resp.StatusCode != 200 {
		t.Errorf("extra handler: %v %v", resp, err)
	}
}

func TestStatusTable(t *testing.T) {
	now := time.Now()
	sha := "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	snap := Snapshot{Connected: true, PID: 99, Version: "v2", SHA256: sha, Since: now.Add(-time.Minute), Instances: []InstanceStatus{
		{Port: "8080", Socket: "active/running", Worker: "active/running", PID: 123, Version: "v2", SHA256: sha, UptimeSeconds: 65, Restarts: 1,
			Health: &ProbeStatus{OK: true, At: now, LatencyMS: 1.25}},
		{Port: "8081", Socket: "failed/failed", SocketResult: "trigger-limit-hit", Worker: "inactive/dead",
			Health: &ProbeStatus{OK: false, Error: "timeout", Failures: 2, At: now}},
	}, Rollout: &RolloutStatus{ID: "20260102T150405Z-0123456789ab", Kind: "upgrade", From: strings.Repeat("f", 64), To: sha,
		FromVersion: "v1", ToVersion: "v2", Phase: "rolling", Running: true, Moved: 1, Total: 2, Current: "lodis@8081.service"}}
	var b bytes.Buffer
	printTable(&b, snap, false, now)
	out := b.String()
	for _, w := range []string{"PORT", "HEALTH", "8080  active/running", "123", "v2       0123456789ab", "1m5s", "ok 1.2ms",
		"failed/failed (trigger-limit-hit)", "FAILING x2 (timeout)", "2 instances; supervisor pid 99, version v2 (0123456789ab)",
		"roll-out 20260102T150405Z-0123456789ab: upgrade v1 (ffffffffffff) → v2 (0123456789ab): rolling, moved 1/2, now lodis@8081.service"} {
		if !strings.Contains(out, w) {
			t.Errorf("table lacks %q:\n%s", w, out)
		}
	}
	snap.Rollout.Running, snap.Rollout.Phase, snap.Rollout.Moved, snap.Rollout.Finished = false, "rolled-back", 0, now.Add(-3*time.Second)
	snap.Rollout.Reason = "canary lodis@8080.service: /__/health answered 503"
	b.Reset()
	printTable(&b, snap, false, now)
	if w := "last roll-out 20260102T150405Z-0123456789ab: upgrade v1 (ffffffffffff) → v2 (0123456789ab): rolled-back, moved 0/2, ended 3s ago (canary lodis@8080.service: /__/health answered 503)"; !strings.Contains(b.String(), w) {
		t.Errorf("table lacks %q:\n%s", w, b.String())
	}
	s := fromUnits([]UnitState{
		{Name: "lodis@8081.socket", ActiveState: "active", SubState: "listening"},
		{Name: "lodis@8080.service", ActiveState: "active", SubState: "running", MainPID: 5},
		{Name: "lodis@8080.socket", ActiveState: "active", SubState: "running"},
	})
	if len(s.Instances) != 2 || s.Instances[0].Port != "8080" || s.Instances[0].PID != 5 || s.Instances[1].Worker != "inactive/dead" {
		t.Errorf("fromUnits: %+v", s.Instances)
	}
}

func TestParseFlags(t *testing.T) {
	c, err := ParseFlags(nil, io.Discard)
	if err != nil || c.Socket != DefaultSocket || c.ProbeInterval != DefaultProbeInterval || c.WakeProbeInterval != 0 {
		t.Fatalf("defaults: %+v %v", c, err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--bogus"}, "-bogus"},
		{[]string{"extra"}, `unexpected argument "extra"`},
		{[]string{"--probe-interval", "0"}, "-probe-interval"},
		{[]string{"--probe-timeout", "6s"}, "-probe-timeout"},
		{[]string{"--probe-failures", "0"}, "-probe-failures"},
		{[]string{"--wake-probe-interval", "5s"}, "a minute or more"},
		{[]string{"--events", "0"}, "-events"},
		{[]string{"--on-event", "/nonexistent"}, "no such file"},
	} {
		_, err := ParseFlags(c.args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("ParseFlags(%v) = %v, want one line with %q", c.args, err, c.want)
		}
	}
}

func TestClient(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	if err := NewClient(sock).Get(context.Background(), "/v1/instances", nil); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("nothing listening: %v, want ErrUnreachable", err)
	}
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/rollout", func(w http.ResponseWriter, r *http.Request) {
		var body map[string]string
		json.NewDecoder(r.Body).Decode(&body)
		if r.Header.Get("Content-Type") != "application/json" || body["sha256"] != "abc" {
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		http.Error(w, "a roll-out is under way", http.StatusConflict)
	})
	mux.HandleFunc("GET /v1/rollout", func(w http.ResponseWriter, r *http.Request) { WriteJSON(w, 200, map[string]string{"id": "r1"}) })
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	defer srv.Close()
	c := NewClient(sock)
	var got map[string]string
	if err := c.Get(context.Background(), "/v1/rollout", &got); err != nil || got["id"] != "r1" {
		t.Fatalf("GET: %v %v", got, err)
	}
	err = c.Post(context.Background(), "/v1/rollout", map[string]string{"sha256": "abc"}, nil)
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != 409 || ae.Message != "a roll-out is under way" ||
		err.Error() != "supervisor answered 409 Conflict: a roll-out is under way" {
		t.Fatalf("POST: %v, want the 409 as an *APIError", err)
	}
}
