// Package packaging tests the Debian package the way an operator meets it:
// `make deb` builds it, lintian judges it, and apt-get installs, upgrades,
// removes and purges it in a throwaway real systemd. Ports 18400-18499.
package packaging

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lodis/lodis/internal/testenv"
)

var (
	repo    string           // the source tree
	deb     string           // the package `make deb` built
	version string           // its Debian version
	mach    *testenv.Machine // one throwaway systemd for the package's tests
)

func TestMain(m *testing.M) {
	if err := setup(); err != nil {
		fmt.Fprintln(os.Stderr, "test/packaging:", err)
		os.Exit(1)
	}
	// The package installs lodis; the machine starts without it.
	os.Exit(testenv.Main(m, testenv.Suite{Machine: testenv.Options{Name: "lodis-pkg"}, NoInstall: true},
		func(_ context.Context, mc *testenv.Machine) error {
			mach = mc
			return nil
		}))
}

// setup builds the package the tests install, before the machine boots.
func setup() error {
	if err := checkTools(); err != nil {
		return err
	}
	var err error
	if repo, err = testenv.RepoRoot(); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "lodis-deb-")
	if err != nil {
		return fmt.Errorf("temp dir: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if deb, err = makeDeb(ctx, dir); err != nil {
		return err
	}
	version, err = debField(deb, "Version")
	return err
}

// checkTools says how to install what the tests need.
func checkTools() error {
	if err := testenv.Check(); err != nil {
		return err
	}
	for tool, pkg := range map[string]string{"dpkg-deb": "dpkg", "lintian": "lintian", "apt-get": "apt", "make": "make"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found: install it with 'apt-get install -y %s' (or run test/deps.sh)", tool, pkg)
		}
	}
	return nil
}

// makeDeb runs `make deb` with its output in dir and returns the package's
// path; extra environment (VERSION=...) is passed to make.
func makeDeb(ctx context.Context, dir string, env ...string) (string, error) {
	return makeDebShell(ctx, dir, "", env...)
}

// makeDebShell is makeDeb with a shell prelude run before make (e.g. umask).
func makeDebShell(ctx context.Context, dir, prelude string, env ...string) (string, error) {
	script := "exec make -s -C \"$REPO\" deb"
	if prelude != "" {
		script = prelude + "; " + script
	}
	c := exec.CommandContext(ctx, "sh", "-c", script)
	c.Env = append(append(os.Environ(), "REPO="+repo, "OUT="+dir), env...)
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	if err := c.Run(); err != nil {
		return "", fmt.Errorf("make deb: %w: %s%s", err, stdout.String(), stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	p := lines[len(lines)-1]
	if !strings.HasSuffix(p, ".deb") {
		return "", fmt.Errorf("make deb printed no package path: %q", stdout.String())
	}
	if !filepath.IsAbs(p) {
		p = filepath.Join(repo, p)
	}
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("make deb: %w", err)
	}
	return p, nil
}

// debField returns one control field of a package.
func debField(deb, field string) (string, error) {
	out, err := exec.Command("dpkg-deb", "-f", deb, field).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, ee.Stderr)
		}
		return "", fmt.Errorf("dpkg-deb -f %s %s: %w", deb, field, err)
	}
	return strings.TrimSpace(string(out)), nil
}
