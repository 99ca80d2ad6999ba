package hello

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

func TestServeAnswersUntilCancelled(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, addr) }()

	var body []byte
	for i := 0; ; i++ {
		resp, err := http.Get("http://" + addr + "/anything")
		if err == nil {
			body, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			break
		}
		if i == 100 {
			t.Fatalf("server never answered: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if string(body) != Body {
		t.Errorf("body %q, want %q", body, Body)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Error("still accepting after cancel")
	}
}

func TestServeBindError(t *testing.T) {
	if err := Serve(t.Context(), "127.0.0.1:-1"); err == nil {
		t.Error("bad address accepted")
	}
}
