// Command lodis-bench runs the lodis benchmarks (package bench/suite) in a
// throwaway real systemd and writes bench/results/report.md and its plots:
//
//	lodis-bench [--quick] [--out DIR] [--stages cold,throughput,...] [--command TEXT]
//
// `make bench` and `make bench QUICK=1` run it as root.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/lodis/lodis/bench/suite"
)

func main() {
	fs := flag.NewFlagSet("lodis-bench", flag.ExitOnError)
	quick := fs.Bool("quick", false, "short run (under 2 minutes), noisier figures")
	out := fs.String("out", "", "directory for report.md and the plots (default: bench/results/ in the source tree)")
	stages := fs.String("stages", "", "comma-separated stages to run (default all): "+strings.Join(suite.StageNames(), ","))
	command := fs.String("command", "", "command line recorded in the report (default: this one)")
	fs.Parse(os.Args[1:])
	o := suite.Options{Quick: *quick, OutDir: *out, Command: *command}
	if o.Command == "" {
		o.Command = strings.Join(os.Args, " ")
	}
	if *stages != "" {
		o.Stages = strings.Split(*stages, ",")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	path, err := suite.Run(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "lodis-bench:", err)
		if path != "" {
			fmt.Fprintln(os.Stderr, "lodis-bench: the report marks the failed stages:", path)
		}
		os.Exit(1)
	}
}
