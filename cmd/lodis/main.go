// Command lodis is the lodis web service suite: the socket-activated worker
// (serve) and its tools. Each subcommand lives in its own package under
// internal/cmd; this is their dispatch table.
package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/lodis/lodis/internal/buildinfo"
	"github.com/lodis/lodis/internal/cmd/config"
	"github.com/lodis/lodis/internal/cmd/drop"
	"github.com/lodis/lodis/internal/cmd/execapp"
	"github.com/lodis/lodis/internal/cmd/generate"
	"github.com/lodis/lodis/internal/cmd/keygen"
	"github.com/lodis/lodis/internal/cmd/metricsproxy"
	"github.com/lodis/lodis/internal/cmd/nginxconfig"
	"github.com/lodis/lodis/internal/cmd/releases"
	"github.com/lodis/lodis/internal/cmd/rollback"
	"github.com/lodis/lodis/internal/cmd/selftest"
	"github.com/lodis/lodis/internal/cmd/serve"
	"github.com/lodis/lodis/internal/cmd/sign"
	"github.com/lodis/lodis/internal/cmd/status"
	"github.com/lodis/lodis/internal/cmd/supervise"
	"github.com/lodis/lodis/internal/cmd/upgrade"
	"github.com/lodis/lodis/internal/cmd/version"
)

type command struct {
	run  func(args []string, stderr io.Writer) int
	help string
}

var commands = map[string]command{
	"serve":         {serve.Main, "serve HTTP on the sockets systemd passes (or --listen)"},
	"supervise":     {supervise.Main, "keep every lodis@PORT instance healthy through systemd's D-Bus API; drive roll-outs"},
	"metrics-proxy": {metricsproxy.Main, "serve the supervisor's /metrics and status page over TCP, read-only (lodis-metrics.service)"},
	"status":        {status.Main, "show the instances: socket, worker, pid, version, uptime, restarts, health"},
	"nginx-config":  {nginxconfig.Main, "print an nginx upstream and server block over the enabled ports"},
	"version":       {version.Main, "print version, commit, Go version and binary sha256"},
	"selftest":      {selftest.Main, "serve /__/health on a loopback port, check it, exit 0 (upgrade validation)"},
	"upgrade":       {upgrade.Main, "validate the app dropped in /var/lib/lodis/incoming and roll it out (root; lodis-upgrade.service)"},
	"drop":          {drop.Main, "drop an app into /var/lib/lodis/incoming; --wait: until it is rolled out or refused"},
	"releases":      {releases.Main, "list releases: active, previous, rejected with reasons"},
	"rollback":      {rollback.Main, "return every running port to the previous release"},
	"keygen":        {keygen.Main, "make an ed25519 key pair for signing releases"},
	"sign":          {sign.Main, "write the detached signature (lodis.sig) of a binary"},
	"config":        {config.Main, "check /etc/lodis/app.conf (config check [-f FILE] [-show])"},
	"exec-app":      {execapp.Main, "run the active release (what each worker runs first)"},
	"generate":      {generate.Main, "the systemd generator (installed as lodis-generator): worker drop-ins from app.conf"},
}

var order = []string{"serve", "supervise", "metrics-proxy", "status", "nginx-config", "version", "selftest", "drop", "upgrade", "releases", "rollback", "keygen", "sign", "config", "exec-app", "generate"}

// generatorName is the name systemd runs the generator by (a link to lodis).
const generatorName = "lodis-generator"

func main() {
	if filepath.Base(os.Args[0]) == generatorName {
		os.Exit(generate.Main(os.Args[1:], os.Stderr))
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

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

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: lodis COMMAND [flags]\n\ncommands:")
	for _, n := range order {
		fmt.Fprintf(w, "  %-14s %s\n", n, commands[n].help)
	}
	fmt.Fprintln(w, "\nrun 'lodis COMMAND -h' for a command's flags")
}
