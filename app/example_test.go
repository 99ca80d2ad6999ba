package app_test

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/lodis/lodis/app"
)

// A complete service: its own page, plus what app gives it.
func ExampleRun() {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello\n")
	})
	// Under systemd or lodis: the passed socket. Run by hand: 127.0.0.1:8080.
	if err := app.Run(context.Background(), mux, app.Options{Name: "hello", Listen: "127.0.0.1:8080"}); err != nil {
		log.Fatal(err)
	}
}

// A service with a health check of its own, an idle exit, a JSON log and
// the App kept, to show its counters on a page.
func ExampleNew() {
	var db *sql.DB // opened elsewhere
	a, err := app.New(app.Options{
		Name:        "shop",
		Health:      func(ctx context.Context) error { return db.PingContext(ctx) },
		IdleTimeout: 5 * time.Minute,
		Logger:      slog.New(slog.NewJSONHandler(os.Stderr, nil)),
	})
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		st := a.Stats()
		fmt.Fprintf(w, "%d connections open, %d requests\n", st.OpenConns, st.Requests)
	})
	ctx, stop := context.WithCancel(context.Background()) // or signal.NotifyContext
	defer stop()
	if err := a.Serve(ctx, mux); err != nil {
		log.Fatal(err)
	}
}
