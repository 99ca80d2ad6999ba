package fleet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// controller runs Ansible the way an operator's machine would, from inside
// the fabric namespace: over SSH, with a key and known_hosts of its own, the
// playbooks of packaging/ansible and an inventory of the hosts' addresses.
type controller struct {
	dir      string // config, inventory, keys, ssh control sockets
	fabric   string // namespace Ansible runs in
	playbook string // packaging/ansible
	key      string // SSH private key
	hosts    []*host
}

// newController makes the SSH key pair, the known_hosts file and the
// Ansible configuration; hosts are added with addHosts.
func newController(ctx context.Context, dir, fabric, repo string) (*controller, error) {
	c := &controller{dir: dir, fabric: fabric, playbook: filepath.Join(repo, "packaging", "ansible"), key: filepath.Join(dir, "id_ed25519")}
	for _, d := range []string{"cp", "home", "local"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return nil, err
		}
	}
	if out, err := exec.CommandContext(ctx, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "lodis-fleet-test", "-f", c.key).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ssh-keygen: %w: %s", err, out)
	}
	cfg := fmt.Sprintf(`[defaults]
inventory = %[1]s/inventory.ini
host_key_checking = True
forks = 5
local_tmp = %[1]s/local
retry_files_enabled = False
nocolor = True
interpreter_python = /usr/bin/python3
callbacks_enabled = ansible.posix.profile_tasks

[ssh_connection]
pipelining = True
ssh_args = -F /dev/null -o ControlMaster=auto -o ControlPersist=60s -o UserKnownHostsFile=%[1]s/known_hosts -o IdentitiesOnly=yes -o BatchMode=yes -o ConnectTimeout=10
control_path = %[1]s/cp/%%%%C
`, dir)
	if err := os.WriteFile(filepath.Join(dir, "ansible.cfg"), []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	return c, nil
}

// addHosts writes the inventory and known_hosts for hosts.
func (c *controller) addHosts(hosts []*host, knownHosts []string) error {
	c.hosts = hosts
	var inv strings.Builder
	inv.WriteString("[lodis]\n")
	for _, h := range hosts {
		fmt.Fprintf(&inv, "%s ansible_host=%s\n", h.name, h.addr)
	}
	fmt.Fprintf(&inv, "\n[lodis:vars]\nansible_user=root\nansible_ssh_private_key_file=%s\n", c.key)
	if err := os.WriteFile(filepath.Join(c.dir, "inventory.ini"), []byte(inv.String()), 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(c.dir, "known_hosts"), []byte(strings.Join(knownHosts, "\n")+"\n"), 0o600)
}

// inFabric is a command run inside the fabric namespace.
func (c *controller) inFabric(ctx context.Context, argv ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", c.fabric}, argv...)...)
	cmd.Env = []string{
		"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "HOME=" + filepath.Join(c.dir, "home"),
		"ANSIBLE_CONFIG=" + filepath.Join(c.dir, "ansible.cfg"), "ANSIBLE_FORCE_COLOR=0", "ANSIBLE_NOCOLOR=1",
	}
	cmd.WaitDelay = 10 * time.Second
	return cmd
}

// ssh runs a command on a host over SSH, as Ansible reaches it.
func (c *controller) ssh(ctx context.Context, h *host, command string) (string, error) {
	cmd := c.inFabric(ctx, "ssh", "-F", "/dev/null", "-i", c.key, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
		"-o", "UserKnownHostsFile="+filepath.Join(c.dir, "known_hosts"), "-o", "ConnectTimeout=5", "root@"+h.addr, command)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ssh %s %q: %w: %s", h.name, command, err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// play is one ansible-playbook run.
type play struct {
	code   int // ansible-playbook's exit status
	output string
	took   time.Duration
	recap  map[string]recapLine // PLAY RECAP, by host
}

type recapLine struct{ ok, changed, unreachable, failed, skipped int }

// run runs playbook (a file of packaging/ansible) with extra variables; a
// non-zero exit status is not an error (play.code says it), a run that
// could not start or was killed is.
func (c *controller) run(ctx context.Context, playbook string, vars map[string]any) (*play, error) {
	b, err := json.Marshal(vars)
	if err != nil {
		return nil, err
	}
	vf, err := os.CreateTemp(c.dir, "vars-*.json")
	if err != nil {
		return nil, err
	}
	defer os.Remove(vf.Name())
	if _, err := vf.Write(b); err != nil {
		return nil, err
	}
	vf.Close()
	cmd := c.inFabric(ctx, "ansible-playbook", filepath.Join(c.playbook, playbook), "-e", "@"+vf.Name())
	cmd.Dir = c.playbook
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err = cmd.Run()
	p := &play{output: out.String(), took: time.Since(start), recap: parseRecap(out.String())}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee) && ee.ExitCode() > 0:
		p.code = ee.ExitCode()
	case err != nil:
		return p, fmt.Errorf("ansible-playbook %s: %w\n%s", playbook, err, out.String())
	}
	return p, nil
}

var recapRE = regexp.MustCompile(`(?m)^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)\s+skipped=(\d+)`)

func parseRecap(out string) map[string]recapLine {
	r := map[string]recapLine{}
	if i := strings.LastIndex(out, "PLAY RECAP"); i >= 0 {
		out = out[i:]
	} else {
		return r
	}
	for _, m := range recapRE.FindAllStringSubmatch(out, -1) {
		n := func(i int) int { v, _ := strconv.Atoi(m[i]); return v }
		r[m[1]] = recapLine{ok: n(2), changed: n(3), unreachable: n(4), failed: n(5), skipped: n(6)}
	}
	return r
}

var taskHostRE = regexp.MustCompile(`^(?:ok|changed|fatal|failed): \[(\w+)`)

// dropLines returns, by host, the last line lodis drop printed there: the
// outcome of the host's roll-out as the play reported it (in a failed
// task's stderr, or the message of the task that says how it went).
func (p *play) dropLines() map[string]string {
	r := map[string]string{}
	host := ""
	for _, l := range strings.Split(p.output, "\n") {
		l = strings.TrimSpace(l)
		if m := taskHostRE.FindStringSubmatch(l); m != nil {
			host = m[1]
		}
		i := strings.LastIndex(l, "lodis drop: ")
		if i < 0 || host == "" {
			continue
		}
		rest := l[i:]
		for j := 1; j < len(rest); j++ {
			if rest[j] == '"' && rest[j-1] != '\\' {
				rest = rest[:j]
				break
			}
		}
		r[host] = strings.ReplaceAll(rest, `\"`, `"`)
	}
	return r
}

// Close ends the SSH control masters Ansible left running (ControlPersist).
func (c *controller) Close() {
	for _, h := range c.hosts {
		cmd := c.inFabric(context.Background(), "ssh", "-F", "/dev/null", "-o", "ControlPath="+filepath.Join(c.dir, "cp", "%C"),
			"-O", "exit", "root@"+h.addr)
		cmd.Run() // no master for a host: nothing to end
	}
}
