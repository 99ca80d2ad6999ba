package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	rel "github.com/lodis/lodis/internal/cmd/releases"
	"github.com/lodis/lodis/internal/statusapi"
	"github.com/lodis/lodis/internal/testenv"
)

// host is one machine of the fleet.
type host struct {
	name string // inventory name: h1, h2, …
	addr string
	m    *testenv.Machine
}

// bootHosts boots n machines at once, machine i in namespace net.host(i).
// The machines booted are returned even on error, for Close.
func bootHosts(ctx context.Context, net *network, n int) ([]*host, error) {
	// ssh.service is masked in test machines that share the host's network;
	// these have their own, and Ansible reaches them over SSH.
	mask := slices.DeleteFunc(slices.Clone(testenv.DefaultMask), func(u string) bool { return u == "ssh.service" })
	hosts := make([]*host, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		hosts[i] = &host{name: fmt.Sprintf("h%d", i+1), addr: hostAddr(i + 1)}
		wg.Go(func() {
			hosts[i].m, errs[i] = testenv.Boot(ctx, testenv.Options{
				Name: fmt.Sprintf("lodis-fleet-%d", i+1), Mask: mask,
				NetworkNamespace: nsPath(net.host(i + 1)), BootTimeout: 2 * time.Minute,
			})
		})
	}
	wg.Wait()
	return hosts, errors.Join(errs...)
}

// prepareSSH readies a booted host for Ansible as a real Debian host would
// be: root's authorized key, a host key of its own (given to known_hosts),
// no password logins; and without this machine image's policy-rc.d, which a
// real host lacks and which would keep apt from starting lodis's units.
// It returns the known_hosts line of the host.
func (h *host) prepareSSH(ctx context.Context, dir string, clientPub []byte) (string, error) {
	root := h.m.Root
	if err := os.Remove(filepath.Join(root, "usr/sbin/policy-rc.d")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	if err := os.MkdirAll(filepath.Join(root, "root/.ssh"), 0o700); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(root, "root/.ssh/authorized_keys"), clientPub, 0o600); err != nil {
		return "", err
	}
	key := filepath.Join(dir, "hostkey-"+h.name)
	if out, err := exec.CommandContext(ctx, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", h.name, "-f", key).CombinedOutput(); err != nil {
		return "", fmt.Errorf("ssh-keygen: %w: %s", err, out)
	}
	for _, t := range []string{"rsa", "ecdsa", "ed25519"} {
		os.Remove(filepath.Join(root, "etc/ssh/ssh_host_"+t+"_key"))
		os.Remove(filepath.Join(root, "etc/ssh/ssh_host_"+t+"_key.pub"))
	}
	priv, err := os.ReadFile(key)
	if err != nil {
		return "", err
	}
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		return "", err
	}
	conf := "# lodis fleet test host\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
	for p, c := range map[string][]byte{
		"/etc/ssh/ssh_host_ed25519_key": priv, "/etc/ssh/ssh_host_ed25519_key.pub": pub,
		"/etc/ssh/sshd_config.d/lodis-fleet.conf": []byte(conf),
	} {
		if err := h.m.WriteFile(p, c, 0o600); err != nil {
			return "", err
		}
	}
	if _, err := h.m.Systemctl(ctx, "restart", "ssh.service"); err != nil {
		return "", err
	}
	f := strings.Fields(string(pub))
	if len(f) < 2 {
		return "", fmt.Errorf("bad host key %s.pub: %q", key, pub)
	}
	return h.addr + " " + f[0] + " " + f[1], nil
}

// status is `lodis status --json` on the host.
func (h *host) status(ctx context.Context) (statusapi.Snapshot, error) {
	var s statusapi.Snapshot
	err := h.lodisJSON(ctx, &s, "status")
	return s, err
}

// releases is `lodis releases --json` on the host.
func (h *host) releases(ctx context.Context) (rel.Report, error) {
	var r rel.Report
	err := h.lodisJSON(ctx, &r, "releases")
	return r, err
}

// lodisJSON runs `lodis COMMAND --json` on the host and decodes its answer
// into v.
func (h *host) lodisJSON(ctx context.Context, v any, command string) error {
	out, err := h.m.Output(ctx, "lodis", command, "--json")
	if err != nil {
		return err
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		return fmt.Errorf("%s: lodis %s --json: %w: %s", h.name, command, err, out)
	}
	return nil
}

// journal is the tail of the lodis units' journal on the host.
func (h *host) journal(ctx context.Context, lines int) string {
	out, err := h.m.Output(ctx, "journalctl", "--no-pager", "-o", "short-precise", "-n", fmt.Sprint(lines),
		"-u", "lodis-supervisor", "-u", "lodis-upgrade", "-u", "ssh")
	if err != nil {
		return err.Error()
	}
	return out
}
