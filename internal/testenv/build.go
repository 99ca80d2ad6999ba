package testenv

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Module is the import path of the lodis module, whose directory RepoRoot finds.
const Module = "github.com/lodis/lodis"

// RepoRoot returns the lodis source tree: the directory of module Module as
// the go command sees it from the working directory, so that it is found
// from the root module and from a module that replaces it with a path (the
// benchmark's, in bench/) alike. It needs the go command on PATH.
func RepoRoot() (string, error) {
	var stderr bytes.Buffer
	c := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", Module)
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		return "", fmt.Errorf("find the lodis source tree: go list -m %s: %w: %s", Module, err, strings.TrimSpace(stderr.String()))
	}
	dir := strings.TrimSpace(string(out))
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		return "", fmt.Errorf("find the lodis source tree: %w", err)
	}
	return dir, nil
}

// Spec says which lodis binary Build makes.
type Spec struct {
	Version string // buildinfo.Version; required
	Fault   string // buildinfo.TestFault; "" for none
	GOARCH  string // "" for the host's
}

// Build builds ./cmd/lodis of the source tree repo into dir, static
// (CGO_ENABLED=0) with the Go toolchain on PATH and its cache, and returns
// the binary's path, dir/lodis-VERSION.
func Build(repo, dir string, s Spec) (string, error) {
	if s.Version == "" {
		return "", fmt.Errorf("build lodis: empty version")
	}
	out := filepath.Join(dir, "lodis-"+s.Version)
	ld := []string{"-s", "-w", "-X", Module + "/internal/buildinfo.Version=" + s.Version}
	if s.Fault != "" {
		ld = append(ld, "-X", Module+"/internal/buildinfo.TestFault="+s.Fault)
	}
	c := exec.Command("go", "build", "-trimpath", "-ldflags", strings.Join(ld, " "), "-o", out, "./cmd/lodis")
	c.Dir = repo
	c.Env = append(os.Environ(), "CGO_ENABLED=0")
	if s.GOARCH != "" {
		c.Env = append(c.Env, "GOARCH="+s.GOARCH)
	}
	if b, err := c.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build lodis %s: go build: %w: %s", s.Version, err, b)
	}
	return out, nil
}

// BuildAll builds each of specs with Build into dir and returns the binaries'
// paths by the specs' names; the first failure ends it.
func BuildAll(repo, dir string, specs map[string]Spec) (map[string]string, error) {
	bins := make(map[string]string, len(specs))
	for name, s := range specs {
		path, err := Build(repo, dir, s)
		if err != nil {
			return nil, err
		}
		bins[name] = path
	}
	return bins, nil
}
