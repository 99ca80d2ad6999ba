// Package apps tests lodis as a host of the user's own service, against a
// real systemd: a Go service built on package app (examples/hello) and a
// Python one that knows nothing of systemd (examples/python) are dropped,
// validated by a trial run, rolled out under load, supervised, stopped when
// idle by the kernel's count, and described by /etc/lodis/app.conf; a bad
// app.conf changes nothing that runs. Ports 18700-18799.
package apps

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lodis/lodis/internal/buildinfo"
	"github.com/lodis/lodis/internal/statusapi"
	"github.com/lodis/lodis/internal/testenv"
)

// Ports 18700-18709 run the apps.
const firstPort, nPorts = 18700, 10

var (
	m    *testenv.Machine
	repo string
	// hello is examples/hello built as its doc says, on the host.
	hello string
)

// helloVersion is the version hello is built with.
const helloVersion = "hello-1.0"

func TestMain(tm *testing.M) {
	testenv.Exit("test/apps", func() (int, error) { return run(tm) })
}

func run(tm *testing.M) (int, error) {
	var dir string
	var err error
	if repo, dir, err = testenv.Workspace("lodis-apps-"); err != nil {
		return 1, err
	}
	defer os.RemoveAll(dir)
	hello = filepath.Join(dir, "hello")
	c := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version="+helloVersion, "-o", hello, "./examples/hello")
	c.Dir, c.Env = repo, append(os.Environ(), "CGO_ENABLED=0")
	if out, err := c.CombinedOutput(); err != nil {
		return 1, fmt.Errorf("build examples/hello: %w: %s", err, out)
	}
	return testenv.Main(tm, testenv.Suite{
		Machine: testenv.Options{Name: "lodis-apps-test"},
		Journal: []string{"lodis-supervisor", "lodis-upgrade"},
	}, setup), nil
}

func setup(ctx context.Context, mc *testenv.Machine) error {
	m = mc
	// A shorter canary soak keeps the suite lean; the default is 5 s.
	if err := m.WriteFile(testenv.UpgradeDropIn, []byte(testenv.ShortSoak), 0o644); err != nil {
		return err
	}
	units := []string{"enable", "--now", "lodis-upgrade.path", "lodis-supervisor.service"}
	for p := firstPort; p < firstPort+nPorts; p++ {
		units = append(units, fmt.Sprintf("lodis@%d.socket", p))
	}
	if _, err := m.Sh(ctx, "systemctl daemon-reload && systemctl "+strings.Join(units, " ")); err != nil {
		return err
	}
	return testenv.WaitFor(ctx, 20*time.Second, func() (bool, string) {
		_, err := status(ctx)
		return err == nil, fmt.Sprint(err)
	})
}

// status is `lodis status --json` inside the machine.
func status(ctx context.Context) (statusapi.Snapshot, error) {
	var s statusapi.Snapshot
	out, err := m.Output(ctx, "lodis", "status", "--json")
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		return s, fmt.Errorf("lodis status --json: %w: %s", err, out)
	}
	return s, nil
}

// dropWait copies src into the machine and drops it with `lodis drop
// --wait`, as an operator would; it returns the command's output and error.
func dropWait(t testing.TB, src, name string) (string, error) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dst := "/opt/lodis-test/" + name
	if err := m.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Join(m.Root, dst), 0o755)
	return m.Output(context.Background(), "lodis", "drop", "--wait", "--timeout", "4m", dst)
}

// setAppConf writes /etc/lodis/app.conf ("" removes it) and reloads
// systemd, which runs lodis-generator.
func setAppConf(t testing.TB, text string) {
	t.Helper()
	p := filepath.Join(m.Root, "/etc/lodis/app.conf")
	if text == "" {
		os.Remove(p)
	} else if err := m.WriteFile("/etc/lodis/app.conf", []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Systemctl(context.Background(), "daemon-reload"); err != nil {
		t.Fatal(err)
	}
}

func fileSHA(t testing.TB, p string) string {
	t.Helper()
	s, err := buildinfo.FileSHA256(p)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func installedSHA(t testing.TB) string { return fileSHA(t, filepath.Join(m.Root, "/usr/bin/lodis")) }

// exeSHA is the sha256 of what process pid executes (/proc/PID/exe).
func exeSHA(t testing.TB, pid int) string {
	t.Helper()
	out, err := m.Output(context.Background(), "sha256sum", fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(out)[0]
}

func port(i int) int { return firstPort + i }

func unit(p int) string { return fmt.Sprintf("lodis@%d.service", p) }
