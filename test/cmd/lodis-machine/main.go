// Command lodis-machine boots a throwaway real systemd with lodis installed,
// for `make demo`: it enables lodis on a range of ports, shows their state,
// and stays up until Ctrl-C or SIGTERM (make demo-stop), then throws the
// machine away.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/lodis/lodis/internal/statusapi"
	"github.com/lodis/lodis/internal/testenv"
)

func main() {
	if len(os.Args) < 2 || os.Args[1] != "demo" {
		fmt.Fprintln(os.Stderr, "usage: lodis-machine demo [--ports 8080-8089] [--state DIR]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet("demo", flag.ExitOnError)
	ports := fs.String("ports", "8080-8089", "port range to enable, FIRST-LAST")
	state := fs.String("state", ".demo", "directory for the pid file and the console log")
	fs.Parse(os.Args[2:])
	if err := demo(*ports, *state); err != nil {
		fmt.Fprintln(os.Stderr, "lodis-machine:", err)
		os.Exit(1)
	}
}

func parseRange(s string) ([]int, error) {
	a, b, ok := strings.Cut(s, "-")
	lo, err1 := strconv.Atoi(a)
	hi, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil || lo < 1 || hi > 65535 || lo > hi || hi-lo > 99 {
		return nil, fmt.Errorf("bad --ports %q: want FIRST-LAST, e.g. 8080-8089 (at most 100 ports)", s)
	}
	var out []int
	for p := lo; p <= hi; p++ {
		out = append(out, p)
	}
	return out, nil
}

func demo(portRange, state string) error {
	ports, err := parseRange(portRange)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(state, 0o755); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	if b, err := os.ReadFile(filepath.Join(state, "pid")); err == nil {
		if pid, _ := strconv.Atoi(strings.TrimSpace(string(b))); pid > 0 && syscall.Kill(pid, 0) == nil {
			return fmt.Errorf("a demo is already running (pid %d): stop it with 'make demo-stop'", pid)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logf, err := os.Create(filepath.Join(state, "console.log"))
	if err != nil {
		return fmt.Errorf("console log: %w", err)
	}
	defer logf.Close()
	fmt.Println("booting a throwaway systemd (console: " + logf.Name() + ")…")
	m, err := testenv.Boot(ctx, testenv.Options{Name: "lodis-demo", Log: logf})
	if err != nil {
		return err
	}
	defer func() {
		fmt.Println("\nhalting the demo machine…")
		m.Close()
		os.Remove(filepath.Join(state, "pid"))
		fmt.Println("done: everything written inside is gone")
	}()
	os.WriteFile(filepath.Join(state, "pid"), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644)
	repo, err := testenv.RepoRoot()
	if err != nil {
		return err
	}
	if err := m.InstallLodis(ctx, repo); err != nil {
		return err
	}
	var units []string
	for _, p := range ports {
		units = append(units, fmt.Sprintf("lodis@%d.socket", p))
	}
	if _, err := m.Systemctl(ctx, append([]string{"enable", "--now"}, units...)...); err != nil {
		return err
	}
	for _, u := range []string{"lodis-supervisor.service", "lodis-upgrade.path"} {
		if _, err := m.Output(ctx, "systemctl", "cat", u); err == nil {
			if _, err := m.Systemctl(ctx, "enable", "--now", u); err != nil {
				return err
			}
		}
	}
	show := func() {
		fmt.Printf("\n%-6s %-28s %-24s %s\n", "PORT", "SOCKET", "WORKER", "PID")
		for _, p := range ports {
			svc := fmt.Sprintf("lodis@%d.service", p)
			fmt.Printf("%-6d %-28s %-24s %s\n", p, m.State(ctx, fmt.Sprintf("lodis@%d.socket", p)),
				m.State(ctx, svc), m.Prop(ctx, svc, "MainPID"))
		}
	}
	show()
	mid := ports[len(ports)/2]
	fmt.Printf("\nno worker runs yet; a request to port %d starts one:\n$ curl -s http://127.0.0.1:%d/__/health\n", mid, mid)
	var body string
	err = testenv.WaitFor(ctx, 5*time.Second, func() (bool, string) {
		h, err := testenv.Health(ctx, mid)
		if err != nil {
			return false, err.Error()
		}
		body = fmt.Sprintf("answered by worker pid %d, version %s", h.PID, h.Version)
		return true, ""
	})
	if err != nil {
		return fmt.Errorf("port %d did not answer: %w", mid, err)
	}
	fmt.Println(body)
	// The supervisor probes a new worker at once; give it a moment so that
	// the table shows the version the worker reported.
	testenv.WaitFor(ctx, 3*time.Second, func() (bool, string) {
		out, err := m.Output(ctx, "lodis", "status", "--json")
		if err != nil {
			return false, err.Error()
		}
		var snap statusapi.Snapshot
		if err := json.Unmarshal([]byte(out), &snap); err != nil {
			return false, err.Error()
		}
		for _, in := range snap.Instances {
			if in.Port == strconv.Itoa(mid) {
				return in.Version != "", "no version yet"
			}
		}
		return false, "port not listed yet"
	})
	if out, err := m.Output(ctx, "lodis", "status"); err == nil {
		fmt.Printf("\n$ lodis status\n%s", out)
	} else {
		show()
	}
	fmt.Printf(`
The demo machine is up (a real systemd, PID 1 of a container sharing this host's network).
  curl http://127.0.0.1:%d/          any of the ports answers; idle workers exit after 30 s
  nsenter -t %d -a systemctl list-units 'lodis*'     look inside
  nsenter -t %d -a journalctl -u 'lodis@*' -f
  nsenter -t %d -a lodis status                         the supervisor's view
Upgrade it: build another version and drop it in (validated, then rolled out port by port;
the same binary dropped again is a logged no-op):
  make -B build VERSION=demo-2 && cp bin/lodis %s/var/lib/lodis/incoming/lodis
  nsenter -t %d -a lodis releases
Or run your own app instead of lodis serve, e.g. examples/hello (see docs/apps.md):
  CGO_ENABLED=0 go build -ldflags "-X main.version=1.0.0" -o bin/hello ./examples/hello
  cp bin/hello %s/root/hello && nsenter -t %d -a lodis drop --wait /root/hello
Stop it with Ctrl-C here, or 'make demo-stop' from another shell.
`, ports[0], m.Leader, m.Leader, m.Leader, m.Root, m.Leader, m.Root, m.Leader)
	<-ctx.Done()
	return nil
}
