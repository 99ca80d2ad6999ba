package machine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// RepoRoot returns the lodis source tree: the nearest directory at or above the
// working directory that holds go.mod.
func RepoRoot() (string, error) {
	d, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find repo root: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		p := filepath.Dir(d)
		if p == d {
			return "", errors.New("find repo root: no go.mod above the working directory")
		}
		d = p
	}
}

// InstallLodis installs lodis into the machine the way an operator would on a
// host: `make install DESTDIR=<machine root> PREFIX=/usr` (building bin/lodis
// on the host if needed), then, inside, systemd-sysusers, systemd-tmpfiles
// --create and daemon-reload.
func (m *Machine) InstallLodis(ctx context.Context, repo string) error {
	c := exec.CommandContext(ctx, "make", "-s", "-C", repo, "install", "DESTDIR="+m.Root, "PREFIX=/usr")
	if out, err := c.CombinedOutput(); err != nil {
		return fmt.Errorf("make install: %w: %s", err, out)
	}
	_, err := m.Sh(ctx, "systemd-sysusers lodis.conf && systemd-tmpfiles --create lodis.conf && systemctl daemon-reload")
	return err
}

// Systemctl runs systemctl inside the machine.
func (m *Machine) Systemctl(ctx context.Context, args ...string) (string, error) {
	return m.Output(ctx, append([]string{"systemctl"}, args...)...)
}

// Prop returns one property of a unit (systemctl show -P), trimmed; "" on error.
func (m *Machine) Prop(ctx context.Context, unit, prop string) string {
	out, err := m.Output(ctx, "systemctl", "show", "-P", prop, unit)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(out)
}

// State returns ActiveState and SubState of a unit, e.g. "active/listening".
func (m *Machine) State(ctx context.Context, unit string) string {
	out, err := m.Output(ctx, "systemctl", "show", "-P", "ActiveState", "-P", "SubState", unit)
	if err != nil {
		return "unknown"
	}
	return strings.Join(strings.Fields(out), "/")
}

// WaitFor polls cond every 50 ms until it returns true or timeout passes; the
// error then carries cond's last description of what it saw.
func WaitFor(ctx context.Context, timeout time.Duration, cond func() (bool, string)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last string
	for {
		ok, desc := cond()
		if ok {
			return nil
		}
		last = desc
		select {
		case <-ctx.Done():
			return fmt.Errorf("after %s: %s", timeout, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Client is an HTTP client for tests: short timeout, no keep-alive reuse
// across calls unless the caller builds its own.
var Client = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// GetJSON fetches url and decodes a JSON body into v; non-200 is an error.
func GetJSON(ctx context.Context, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := Client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	if v == nil {
		return nil
	}
	return json.Unmarshal(b, v)
}
