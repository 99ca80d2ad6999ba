// Command lodis is the lodis web service suite: the socket-activated worker
// (serve) and its tools. Each subcommand lives in its own package.
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/lodis/lodis/internal/buildinfo"
	"github.com/lodis/lodis/internal/nginxconf"
	"github.com/lodis/lodis/internal/upgrade"
	"github.com/lodis/lodis/internal/worker"
	"github.com/lodis/lodis/rollout"
	"github.com/lodis/lodis/supervisor"
)

type command struct {
	run  func(args []string, stderr io.Writer) int
	help string
}

var commands = map[string]command{
	"serve":        {worker.Main, "serve HTTP on the sockets systemd passes (or --listen)"},
	"supervise":    {supervise, "keep every lodis@PORT instance healthy through systemd's D-Bus API; drive roll-outs"},
	"status":       {supervisor.StatusMain, "show the instances: socket, worker, pid, version, uptime, restarts, health"},
	"nginx-config": {nginxconf.Main, "print an nginx upstream and server block over the enabled ports"},
	"version":      {version, "print version, commit, Go version and binary sha256"},
	"selftest":     {worker.Selftest, "serve /__/health on a loopback port, check it, exit 0 (upgrade validation)"},
	"upgrade":      {upgrade.Main, "validate the binary dropped in /var/lib/lodis/incoming and roll it out"},
	"releases":     {upgrade.Releases, "list releases: active, previous, rejected with reasons"},
	"rollback":     {upgrade.Rollback, "return every running port to the previous release"},
	"keygen":       {upgrade.Keygen, "make an ed25519 key pair for signing releases"},
	"sign":         {upgrade.Sign, "write the detached signature (lodis.sig) of a binary"},
}

var order = []string{"serve", "supervise", "status", "nginx-config", "version", "selftest", "upgrade", "releases", "rollback", "keygen", "sign"}

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stdout)
		return 0
	}
	if buildinfo.TestFault == buildinfo.FaultExitAtStart {
		fmt.Fprintln(stderr, "lodis: test fault exit-at-start: exiting at once")
		return 3
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "lodis: unknown command %q (run 'lodis help')\n", args[0])
		return 2
	}
	return c.run(args[1:], stderr)
}

// supervise is `lodis supervise` with the roll-out driver.
func supervise(args []string, stderr io.Writer) int {
	return supervisor.Main(args, stderr, &rollout.Service{})
}

func version(args []string, stderr io.Writer) int {
	if len(args) > 0 {
		fmt.Fprintf(stderr, "lodis version: unexpected argument %q\n", args[0])
		return 2
	}
	fmt.Print(buildinfo.String())
	return 0
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: lodis COMMAND [flags]\n\ncommands:")
	for _, n := range order {
		fmt.Fprintf(w, "  %-13s %s\n", n, commands[n].help)
	}
	fmt.Fprintln(w, "\nrun 'lodis COMMAND -h' for a command's flags")
}
