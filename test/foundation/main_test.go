// Package foundation tests the socket-activated worker and its units against a
// real systemd: activation, idle exit, graceful restart, storms, unit
// verification and hardening.
package foundation

import (
	"context"
	"os"
	"testing"

	"github.com/lodis/lodis/internal/testenv"
)

var m *testenv.Machine

func TestMain(tm *testing.M) {
	os.Exit(testenv.Main(tm, testenv.Suite{Machine: testenv.Options{Name: "lodis-foundation"}},
		func(_ context.Context, mc *testenv.Machine) error {
			m = mc
			return nil
		}))
}
