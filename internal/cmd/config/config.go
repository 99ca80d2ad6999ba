// Package config is `lodis config`: check /etc/lodis/app.conf, and show the
// worker settings it makes.
package config

import (
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/lodis/lodis/internal/appconf"
	"github.com/lodis/lodis/internal/cli"
)

// Main is `lodis config check [-f FILE] [-show]`: it reads the app
// description (default /etc/lodis/app.conf) and says in one line whether it
// is good — exit 0 — or what is wrong, with the file and line — exit 1.
// With -show it prints the drop-in the generator makes of it. Apply a good
// file with `systemctl daemon-reload`; workers started from then on run
// with it.
func Main(args []string, stderr io.Writer) int {
	return run(args, os.Stdout, stderr)
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "check" {
		fmt.Fprintln(stderr, "lodis config: want 'lodis config check [-f FILE] [-show]'")
		return 2
	}
	fs := flag.NewFlagSet("lodis config check", flag.ContinueOnError)
	file := fs.String("f", appconf.Path, "the app description to check")
	show := fs.Bool("show", false, "print the worker drop-in it makes")
	if err := cli.Parse(fs, args[1:], "lodis config check [-f FILE] [-show]", stderr); err != nil {
		return cli.Exit("lodis config check", err, stderr)
	}
	c, err := appconf.Load(*file)
	if err != nil {
		fmt.Fprintf(stderr, "lodis config check: %v\n", err)
		return 1
	}
	if *show {
		fmt.Fprint(stdout, c.DropIn("@BINDIR@", *file))
	}
	if _, err := os.Stat(*file); err != nil {
		fmt.Fprintf(stderr, "lodis config check: %s does not exist: the default app (lodis serve) runs\n", *file)
		return 0
	}
	fmt.Fprintf(stderr, "lodis config check: %s is good; apply it with systemctl daemon-reload\n", *file)
	return 0
}
