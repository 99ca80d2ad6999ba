// Package upgrade is `lodis upgrade`, run by lodis-upgrade.service when a
// binary is dropped; see upgrade.Upgrader.Upgrade for what it does.
package upgrade

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

// Main is `lodis upgrade`. The exit status is 0 when the last drop was
// rolled out, was the active release already, or there was none; 1 when it
// was rejected or rolled back; 2 for bad flags.
func Main(args []string, stderr io.Writer) int {
	var cfg upgrade.Config
	fs := flag.NewFlagSet("lodis upgrade", flag.ContinueOnError)
	cfg.Flags(fs, false)
	if err := cli.Parse(fs, args, "lodis upgrade [flags]", stderr); err != nil {
		return cli.Exit("lodis upgrade", err, stderr)
	}
	u, err := upgrade.New(cfg, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "lodis upgrade: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return u.Upgrade(ctx)
}
