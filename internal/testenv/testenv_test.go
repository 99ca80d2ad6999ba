package testenv

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestPollEndsWhenTheConditionHolds(t *testing.T) {
	n := 0
	err := Poll(context.Background(), 5*time.Second, time.Millisecond, func() (bool, string) {
		n++
		return n == 3, ""
	})
	if err != nil || n != 3 {
		t.Errorf("Poll = %v after %d calls, want nil after 3", err, n)
	}
}

func TestWaitForReportsWhatItLastSaw(t *testing.T) {
	n := 0
	start := time.Now()
	err := WaitFor(context.Background(), 200*time.Millisecond, func() (bool, string) {
		n++
		return false, "seen " + strings.Repeat("x", n)
	})
	if err == nil || !strings.Contains(err.Error(), "after 200ms: seen "+strings.Repeat("x", n)) {
		t.Errorf("WaitFor = %v, want the timeout and the last of %d descriptions", err, n)
	}
	if took := time.Since(start); took < 200*time.Millisecond || n < 2 || n > 5 {
		t.Errorf("WaitFor took %s and called its condition %d times: want 200 ms, one call per %s", took, n, WaitInterval)
	}
}

func TestRepoRootIsTheLodisModule(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "cmd", "lodis", "main.go")); err != nil {
		t.Errorf("RepoRoot %s holds no cmd/lodis: %v", root, err)
	}
	wd, _ := os.Getwd()
	if want := filepath.Dir(filepath.Dir(wd)); root != want {
		t.Errorf("RepoRoot = %s, want %s (two levels above internal/testenv)", root, want)
	}
}

func TestBuildRefusesAnEmptyVersion(t *testing.T) {
	if _, err := Build(t.TempDir(), t.TempDir(), Spec{}); err == nil || !strings.Contains(err.Error(), "empty version") {
		t.Errorf("Build without a version: %v, want an error saying so", err)
	}
}
