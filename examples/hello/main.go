// Command hello is a socket-activated service of your own, built on lodis's
// activation package: it serves on the sockets systemd passes (or on
// 127.0.0.1:8080 when run by hand), exits after 30 s idle, and drains on
// SIGTERM without losing a request.
//
//	systemd-socket-activate -l 127.0.0.1:9000 go run ./examples/hello
package main

import (
	"context"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/lodis/lodis/activation"
)

func main() {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello\n") })

	ls, err := activation.Listeners("", "127.0.0.1:8080")
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := (&activation.Server{Handler: mux, IdleTimeout: 30 * time.Second}).Serve(ctx, ls...); err != nil {
		log.Fatal(err)
	}
}
