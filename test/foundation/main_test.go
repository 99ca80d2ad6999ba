// Package foundation tests the socket-activated worker and its units against a
// real systemd: activation, idle exit, graceful restart, storms, unit
// verification and hardening.
package foundation

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/lodis/lodis/test/machine"
)

var m *machine.Machine

func TestMain(tm *testing.M) {
	os.Exit(run(tm))
}

func run(tm *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var err error
	m, err = machine.Boot(ctx, machine.Options{Name: "lodis-foundation"})
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: boot a real systemd:", err)
		return 1
	}
	defer m.Close()
	repo, err := machine.RepoRoot()
	if err == nil {
		err = m.InstallLodis(ctx, repo)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: install lodis:", err)
		return 1
	}
	return tm.Run()
}
