// Package rollback is `lodis rollback`.
package rollback

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"syscall"

	"github.com/lodis/lodis/internal/cli"
	"github.com/lodis/lodis/internal/upgrade"
)

// Main is `lodis rollback`: return every running worker to the previous
// release (or to -to); see upgrade.Upgrader.Rollback. It runs as root or as
// user lodis. The exit status is 0 when every running worker reports the
// release returned to, 1 otherwise (the roll-back itself was rolled back), 2
// for bad flags.
func Main(args []string, stderr io.Writer) int {
	var cfg upgrade.Config
	fs := flag.NewFlagSet("lodis rollback", flag.ContinueOnError)
	cfg.Flags(fs, true)
	if err := cli.Parse(fs, args, "lodis rollback [flags]", stderr); err != nil {
		return cli.Exit("lodis rollback", err, stderr)
	}
	u, err := upgrade.New(cfg, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "lodis rollback: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := u.Rollback(ctx); err != nil {
		fmt.Fprintf(stderr, "lodis rollback: %v\n", err)
		return 1
	}
	return 0
}
