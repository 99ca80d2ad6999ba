// Command bench-hello is the bare net/http hello server of the benchmarks
// (package bench/hello): bench-hello --listen 127.0.0.1:18511. It stops on
// SIGTERM or Ctrl-C.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/lodis/lodis/bench/hello"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:18511", "address to bind")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := hello.Serve(ctx, *listen); err != nil {
		fmt.Fprintln(os.Stderr, "bench-hello:", err)
		os.Exit(1)
	}
}
