// Package version is `lodis version`.
package version

import (
	"fmt"
	"io"
	"os"

	"github.com/lodis/lodis/internal/buildinfo"
)

// Main prints the version, commit, Go version and the binary's SHA-256.
func Main(args []string, stderr io.Writer) int {
	if len(args) > 0 {
		fmt.Fprintf(stderr, "lodis version: unexpected argument %q\n", args[0])
		return 2
	}
	fmt.Fprint(os.Stdout, buildinfo.String())
	return 0
}
