// Package execapp is `lodis exec-app`, the first thing a worker runs: it
// resolves the active release and replaces itself with it.
package execapp

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"github.com/lodis/lodis/internal/release"
)

// Main execs the active release (the file /var/lib/lodis/current points
// at) with args, after an optional "--". The release is started through its
// resolved path, so that the process names its release — /proc/PID/exe for
// a binary, the script's path in /proc/PID/cmdline for a script, whose exe
// is its interpreter — and a roll-out and `lodis status` can tell which
// release each worker runs. The process keeps its PID, environment and
// file descriptors (the sockets systemd passed). It returns only on
// failure: exit 1.
func Main(args []string, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	link := release.NewStore("").CurrentLink()
	target, err := os.Readlink(link)
	if err != nil {
		fmt.Fprintf(stderr, "lodis exec-app: no active release: %v\n", err)
		return 1
	}
	if !filepath.IsAbs(target) {
		target = filepath.Join(filepath.Dir(link), target)
	}
	target = filepath.Clean(target)
	err = syscall.Exec(target, append([]string{target}, args...), os.Environ())
	fmt.Fprintf(stderr, "lodis exec-app: run the active release %s: %v\n", target, err)
	return 1
}
