package testenv

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestCgroupsSeparateAProcess: the join script puts the process it execs in
// a group of its own in every hierarchy, and remove leaves none behind.
func TestCgroupsSeparateAProcess(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root, as every test that boots a machine")
	}
	cg, err := newCgroups("lodis-testenv-unit-" + t.Name())
	if err != nil {
		t.Fatal(err)
	}
	defer cg.remove()
	out, err := exec.Command("sh", "-c", cg.joinScript(), "sh", "cat", "/proc/self/cgroup").CombinedOutput()
	if err != nil {
		t.Fatalf("join: %v: %s", err, out)
	}
	mine, _ := os.ReadFile("/proc/self/cgroup")
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if !strings.HasSuffix(line, "/lodis-testenv-unit-"+t.Name()) && !strings.Contains(line, ":cpuset:") {
			t.Errorf("the joined process is in %q, want its own group (this test: %s)", line, mine)
		}
	}
	cg.remove()
	for _, d := range cg {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("%s is still there after remove: %v", d, err)
		}
	}
}
