// Package testbin builds lodis binaries for tests: the real command, stamped
// with a version string and optionally a test fault (buildinfo.TestFault) or
// another architecture. Builds use the Go toolchain on PATH and its cache.
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Spec says which binary to build.
type Spec struct {
	Version string // buildinfo.Version; required
	Fault   string // buildinfo.TestFault; "" for none
	GOARCH  string // "" for the host's
}

// Build builds ./cmd/lodis of the module at repo into dir and returns the
// binary's path (dir/lodis-VERSION).
func Build(repo, dir string, s Spec) (string, error) {
	if s.Version == "" {
		return "", fmt.Errorf("testbin: empty version")
	}
	out := filepath.Join(dir, "lodis-"+s.Version)
	ld := []string{"-s", "-w", "-X", "github.com/lodis/lodis/internal/buildinfo.Version=" + s.Version}
	if s.Fault != "" {
		ld = append(ld, "-X", "github.com/lodis/lodis/internal/buildinfo.TestFault="+s.Fault)
	}
	c := exec.Command("go", "build", "-trimpath", "-ldflags", strings.Join(ld, " "), "-o", out, "./cmd/lodis")
	c.Dir = repo
	c.Env = append(os.Environ(), "CGO_ENABLED=0")
	if s.GOARCH != "" {
		c.Env = append(c.Env, "GOARCH="+s.GOARCH)
	}
	if b, err := c.CombinedOutput(); err != nil {
		return "", fmt.Errorf("testbin: go build %s: %w: %s", s.Version, err, b)
	}
	return out, nil
}

// RepoRoot is the directory holding go.mod at or above the working directory.
func RepoRoot() (string, error) {
	d, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		p := filepath.Dir(d)
		if p == d {
			return "", fmt.Errorf("testbin: no go.mod above the working directory")
		}
		d = p
	}
}
