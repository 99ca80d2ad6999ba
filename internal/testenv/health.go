package testenv

import (
	"context"
	"strconv"
	"time"

	"github.com/lodis/lodis/internal/health"
)

// HealthTimeout bounds one Health check, connecting included.
const HealthTimeout = 5 * time.Second

var healthClient = &health.Client{Timeout: HealthTimeout, UserAgent: "lodis-test"}

// Health fetches the health report of the worker behind port on 127.0.0.1
// with the client the supervisor and the roll-out use (package health): no
// keep-alive, at most HealthTimeout or until ctx ends. An answer other than
// 2xx is a *health.StatusError, a body that is not JSON a *health.SyntaxError.
func Health(ctx context.Context, port int) (health.Report, error) {
	r, _, err := healthClient.Get(ctx, "", strconv.Itoa(port), "")
	return r, err
}
