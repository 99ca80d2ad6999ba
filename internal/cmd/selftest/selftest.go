// Package selftest is `lodis selftest`, which upgrade validation runs in a
// sandbox before any release is switched to.
package selftest

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/lodis/lodis/internal/cli"
	"github.com/lodis/lodis/internal/worker"
)

// Main is `lodis selftest`: it proves that this binary can serve. It binds
// an ephemeral loopback port (127.0.0.1:0), serves the worker's endpoints on it
// with the same code as `lodis serve`, fetches /__/health, and checks that the
// answer is "ok" and names this binary's version and SHA-256. It then drains
// and exits 0, or prints one line saying what failed and exits 1. The whole
// run is bounded by -timeout (default 10 s). It needs no systemd; the upgrade
// validation runs it inside a sandbox before any release is switched to.
func Main(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("lodis selftest", flag.ContinueOnError)
	timeout := fs.Duration("timeout", 10*time.Second, "give up after this long")
	if err := cli.Parse(fs, args, "lodis selftest [-timeout 10s]", stderr); err != nil {
		return cli.Exit("lodis selftest", err, stderr)
	}
	if *timeout <= 0 {
		fmt.Fprintf(stderr, "lodis selftest: bad -timeout %v: must be positive\n", *timeout)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	msg, err := worker.Selftest(ctx, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "lodis selftest: FAILED: %v\n", err)
		return 1
	}
	fmt.Fprintln(stderr, "lodis selftest: ok:", msg)
	return 0
}
