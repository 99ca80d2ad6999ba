package isolation

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/lodis/lodis/internal/testenv"
)

// Shared by the tests: the booted machine, and what TestMain put in it.
var (
	m *testenv.Machine
	// probe and pyapp are the two apps' paths inside the machine, in the
	// release store where an app lives; probeSHA is the probe's sha256.
	probe, pyapp, probeSHA string
)

func TestMain(tm *testing.M) {
	os.Exit(testenv.Main(tm, testenv.Suite{Machine: testenv.Options{Name: "lodis-isolation"}, SetupTimeout: 5 * time.Minute},
		func(ctx context.Context, mc *testenv.Machine) error { m = mc; return setup(ctx) }))
}

// setup installs the probe and the Python app (lodis is installed), the
// sandbox's root directory, and the files the attacks look for.
func setup(ctx context.Context) error {
	repo, err := testenv.RepoRoot()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "lodis-isolation-probe-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "probe")
	c := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", bin, "./test/isolation/probe")
	c.Dir = repo
	c.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := c.CombinedOutput(); err != nil {
		return fmt.Errorf("build the probe: %w: %s", err, out)
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(b)
	probeSHA = hex.EncodeToString(sum[:])
	probe = "/var/lib/lodis/releases/" + probeSHA + "/app"
	py, err := os.ReadFile("testdata/pyapp.py")
	if err != nil {
		return err
	}
	sum = sha256.Sum256(py)
	pyapp = "/var/lib/lodis/releases/" + hex.EncodeToString(sum[:]) + "/app"
	for path, data := range map[string][]byte{probe: b, pyapp: py} {
		if err := m.WriteFile(path, data, 0o755); err != nil {
			return err
		}
	}
	// Markers in the shared places, and secrets where a worker must not
	// read, made by root inside the machine.
	script := ""
	for _, mk := range HostMarkers {
		script += fmt.Sprintf("echo host > %s\n", mk)
	}
	for _, s := range Secrets {
		d := filepath.Dir(s.Path)
		script += fmt.Sprintf("[ -d %[1]s ] || install -d -m %[2]o %[1]s\necho secret > %[3]s\nchmod %[4]o %[3]s\n", d, s.DirMode, s.Path, s.Mode)
	}
	_, err = m.Sh(ctx, script)
	return err
}
