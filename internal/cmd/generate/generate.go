// Package generate is `lodis generate`, the systemd generator: installed as
// lib/systemd/system-generators/lodis-generator (a link to lodis), run by
// systemd at boot and at every daemon-reload.
package generate

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/coreos/go-systemd/v22/journal"

	"github.com/lodis/lodis/internal/appconf"
	"github.com/lodis/lodis/internal/probeallow"
)

// Main runs the generator: args are the three output directories systemd
// passes (normal, early, late; only the first is written). It writes the
// worker drop-ins of /etc/lodis/app.conf (appconf.Generate), and the
// IPAddressAllow= drop-ins that let the supervisor, lodis-upgrade.service
// and lodis-rollout@.service probe ports listening on a non-loopback
// address (package probeallow). A bad app.conf
// is one line on stderr, which systemd sends to the journal, and exit 0:
// the last good configuration stays in force, and a failing generator would
// only add a warning to every daemon-reload. Exit 1 when the drop-ins
// cannot be written, 2 for bad arguments.
func Main(args []string, stderr io.Writer) int {
	if len(args) != 1 && len(args) != 3 {
		fmt.Fprintln(stderr, "lodis-generator: want the generator output directories (NORMAL [EARLY LATE]), as systemd passes them")
		return 2
	}
	self, err := os.Executable()
	if err == nil {
		self, err = filepath.EvalSymlinks(self)
	}
	if err != nil {
		fmt.Fprintf(stderr, "lodis-generator: find the lodis binary: %v\n", err)
		return 1
	}
	bad, err := appconf.Generate(appconf.Path, appconf.Applied, args[0], filepath.Dir(self))
	if bad != nil {
		say(stderr, journal.PriWarning, fmt.Sprintf("lodis-generator: %v; the app settings applied before stay in force", bad))
	}
	if err != nil {
		say(stderr, journal.PriErr, fmt.Sprintf("lodis-generator: %v", err))
		return 1
	}
	// The probing units may reach the addresses the sockets listen on.
	addrs, perr := probeallow.Addresses(probeallow.Dirs)
	if perr != nil {
		say(stderr, journal.PriWarning, fmt.Sprintf("lodis-generator: %v", perr))
	}
	if err := probeallow.Write(args[0], addrs); err != nil {
		say(stderr, journal.PriErr, fmt.Sprintf("lodis-generator: %v", err))
		return 1
	}
	return 0
}

// say logs one line: to the journal when it runs (at daemon-reload; a
// generator's stderr may go nowhere a container's operator looks), to stderr
// as well (which systemd sends to the kernel log at boot).
func say(stderr io.Writer, p journal.Priority, msg string) {
	if journal.Enabled() {
		journal.Send(msg, p, map[string]string{"SYSLOG_IDENTIFIER": "lodis-generator"})
	}
	fmt.Fprintln(stderr, msg)
}
