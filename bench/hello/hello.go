// Package hello is the bare net/http server that lodis is measured against:
// one handler, no middleware, no socket activation, no drain, default
// http.Server settings. Whatever lodis costs on top of net/http shows as the
// gap between the two.
package hello

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
)

// Body is what every request is answered with (200, text/plain).
const Body = "hello\n"

// Handler answers every request with Body.
func Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte(Body))
	})
}

// Serve binds addr and serves Handler until ctx is done, then closes the
// server at once (no drain: this is the bare baseline). It returns the bind
// error, or nil after ctx is done.
func Serve(ctx context.Context, addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{Handler: Handler()}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}
