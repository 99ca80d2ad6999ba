// Package buildinfo tells which lodis binary is running: the version and commit
// stamped at link time, the Go version, and the SHA-256 of the executable file.
package buildinfo

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
)

// Version is the release version, set at link time with
// -ldflags "-X github.com/lodis/lodis/internal/buildinfo.Version=1.2.3".
// It is "dev" in an unstamped build.
var Version = "dev"

// Commit is the source commit, set at link time like Version; "unknown" when unset.
var Commit = "unknown"

var sum = sync.OnceValues(func() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find executable: %w", err)
	}
	return FileSHA256(exe)
})

// SHA256 returns the hex SHA-256 of the running executable. It is computed once,
// on first use (a few milliseconds for a typical binary), and cached.
func SHA256() (string, error) { return sum() }

// FileSHA256 returns the hex SHA-256 of the file at path.
func FileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("hash binary: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hash binary %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// GoVersion is the Go toolchain that built this binary.
func GoVersion() string { return runtime.Version() }

// String is the multi-line text `lodis version` prints.
func String() string {
	s, err := SHA256()
	if err != nil {
		s = "unavailable (" + err.Error() + ")"
	}
	return fmt.Sprintf("lodis %s\ncommit: %s\ngo: %s\nsha256: %s\n", Version, Commit, GoVersion(), s)
}

// TestFault makes this binary misbehave on purpose, for the upgrade tests only.
// It is set at link time with
// -ldflags "-X github.com/lodis/lodis/internal/buildinfo.TestFault=NAME"; the
// Makefile and the packages never set it, so a release build has none. Names:
//
//	exit-at-start       every command exits with status 3 before doing anything
//	selftest-fails      `lodis selftest` reports a failure and exits 1
//	serve-unhealthy     a socket-activated `lodis serve` answers /__/health with 503
//	hang-health         a socket-activated `lodis serve` never answers /__/health
//	ignore-sigterm      `lodis serve` ignores SIGTERM (it never drains)
//	unhealthy-after-1s  a socket-activated `lodis serve` answers /__/health with 503
//	                    once it has been up for a second
var TestFault = ""

// Test faults understood by lodis; see TestFault.
const (
	FaultExitAtStart      = "exit-at-start"
	FaultSelftestFails    = "selftest-fails"
	FaultServeUnhealthy   = "serve-unhealthy"
	FaultHangHealth       = "hang-health"
	FaultIgnoreSIGTERM    = "ignore-sigterm"
	FaultUnhealthyAfter1s = "unhealthy-after-1s"
)

// ShortSHA returns the first 12 hex digits of a SHA-256, the form lodis shows
// in tables and logs; shorter input is returned unchanged.
func ShortSHA(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}
