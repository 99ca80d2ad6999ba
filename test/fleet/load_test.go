package fleet

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/lodis/lodis/internal/load"
)

// The load runs inside the fabric namespace, where the front is: this test
// binary started again there (ip netns exec), with loadChildEnv set, sends
// it with internal/load to the front on that namespace's loopback. It stops at
// SIGTERM, or by itself after loadMaxDuration, and prints the load.Result
// as JSON on stdout.
const (
	loadChildEnv    = "LODIS_FLEET_LOAD_CHILD"
	loadRateEnv     = "LODIS_FLEET_LOAD_RATE"
	loadMaxDuration = 4 * time.Minute
)

// loadChild is the process TestMain runs when loadChildEnv is set.
func loadChild() int {
	rate, err := strconv.ParseFloat(os.Getenv(loadRateEnv), 64)
	if err != nil {
		fmt.Fprintf(os.Stderr, "load: bad %s: %v\n", loadRateEnv, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	res, err := load.Run(ctx, load.Options{
		Targets:  []string{"http://" + frontAddr + "/"},
		Rate:     rate,
		Duration: loadMaxDuration,
		Conns:    16,
		Timeout:  10 * time.Second,
		Interval: time.Second,
	})
	if res == nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		return 1
	}
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		return 1
	}
	return 0
}

// loadRun is a load child under way.
type loadRun struct {
	out, errOut bytes.Buffer
	done        chan error
	stopOnce    func() (*load.Result, error)
}

// startLoad starts the load child at rate requests per second.
func startLoad(c *controller, rate float64) (*loadRun, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := c.inFabric(context.Background(), exe, "-test.run=^$")
	cmd.Env = append(cmd.Env, loadChildEnv+"=1", loadRateEnv+"="+strconv.FormatFloat(rate, 'f', -1, 64))
	l := &loadRun{done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = &l.out, &l.errOut
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the load: %w", err)
	}
	go func() { l.done <- cmd.Wait() }()
	var res *load.Result
	var rerr error
	stopped := false
	l.stopOnce = func() (*load.Result, error) {
		if stopped {
			return res, rerr
		}
		stopped = true
		cmd.Process.Signal(syscall.SIGTERM)
		var err error
		select {
		case err = <-l.done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-l.done
			rerr = fmt.Errorf("the load did not stop within 30 s of SIGTERM: %s", l.errOut.String())
			return nil, rerr
		}
		if err != nil {
			rerr = fmt.Errorf("load: %w: %s", err, l.errOut.String())
			return nil, rerr
		}
		res = new(load.Result)
		if err := json.Unmarshal(l.out.Bytes(), res); err != nil {
			res, rerr = nil, fmt.Errorf("load result: %w: %q", err, l.out.String())
		}
		return res, rerr
	}
	return l, nil
}

// stop ends the load and returns its result. It is safe to call again.
func (l *loadRun) stop() (*load.Result, error) { return l.stopOnce() }
