// Command hello is a web service of your own, run by lodis: a page of its
// own, and from package app the health report at $LODIS_HEALTH_PATH (default
// /__/health, with its version and the SHA-256 of this binary), sd_notify,
// the connection cap and a drain on SIGTERM that loses no request. Run by
// hand, without socket activation, it serves 127.0.0.1:8080.
//
// Build it as a static binary, with a version of its own, and drop it:
//
//	CGO_ENABLED=0 go build -ldflags "-X main.version=1.0.0" -o hello ./examples/hello
//	sudo lodis drop --wait hello
//
// CGO_ENABLED=0 makes the binary independent of the host's C library (Go's
// own DNS resolver instead of glibc's), so it runs under any lodis host and
// sandbox. lodis runs a release as `app serve` unless app.conf's APP_ARGS=
// says otherwise; hello ignores its arguments. Try it without lodis:
//
//	systemd-socket-activate -l 127.0.0.1:9000 --fdname=http ./hello
package main

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"os"

	"github.com/lodis/lodis/app"
)

// version is this release's version, set with -ldflags "-X main.version=…";
// empty, the version the go command recorded is reported.
var version string

func main() {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from pid %d on port %s\n", os.Getpid(), os.Getenv(app.PortEnv))
	})
	err := app.Run(context.Background(), mux, app.Options{Name: "hello", Version: version, Listen: "127.0.0.1:8080"})
	if err != nil {
		log.Fatal(err)
	}
}
