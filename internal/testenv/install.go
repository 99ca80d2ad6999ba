package testenv

import (
	"context"
	"fmt"
	"os/exec"
)

// InstallLodis installs lodis into the machine the way an operator would on a
// host: `make install DESTDIR=<machine root> PREFIX=/usr` in the source tree
// repo (building bin/lodis on the host if needed), then, inside,
// systemd-sysusers, systemd-tmpfiles --create and daemon-reload.
func (m *Machine) InstallLodis(ctx context.Context, repo string) error {
	c := exec.CommandContext(ctx, "make", "-s", "-C", repo, "install", "DESTDIR="+m.Root, "PREFIX=/usr")
	if out, err := c.CombinedOutput(); err != nil {
		return fmt.Errorf("make install: %w: %s", err, out)
	}
	_, err := m.Sh(ctx, "systemd-sysusers lodis.conf && systemd-tmpfiles --create lodis.conf && systemctl daemon-reload")
	return err
}
