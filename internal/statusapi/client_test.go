package statusapi

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"testing"
)

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
