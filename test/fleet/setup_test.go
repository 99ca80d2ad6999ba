package fleet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/lodis/lodis/internal/buildinfo"

	"github.com/lodis/lodis/internal/testenv"
)

// The fleet's shape: nHosts hosts, each with the ports in ports.
const nHosts = 3

var ports = []int{8080, 8081, 8082}

// Versions: the package installs installedVersion; goodVersion is the
// release rolled out; badVersion passes validation (its trial run answers
// healthy) and fails its health check a second after it started, so after
// the canary switch (buildinfo.FaultUnhealthyAfter1s).
const (
	installedVersion = "0.9.0"
	repoVersion      = "0.9.3"
	goodVersion      = "0.9.1-fleet"
	badVersion       = "0.9.2-unhealthy"
)

// appConf is the app description the role writes to every host; its
// STOP_TIMEOUT is not the default (15s), so that the test sees it applied.
var appConf = map[string]string{"HEALTH_PATH": "/__/health", "STOP_TIMEOUT": "20s"}

// fleet is everything the tests share: the built artefacts, the network,
// the hosts, the controller and the front.
type fleet struct {
	repo, dir   string
	deb         string // the package installed on every host
	repoDeb     string // a newer one, in an apt repository (TestInstallGivenVersion)
	good, bad   string // release binaries
	goodSHA     string
	badSHA      string
	net         *network
	hosts       []*host
	ctl         *controller
	front       *front
	installPlay *play
	closeOnce   sync.Once
	closeErr    error
	logf        func(string, ...any)
}

// setUp builds the package and the releases, makes the network, boots the
// hosts, installs lodis on them with install.yml and starts the front. On
// error the fleet returned holds what was made, for Close.
func setUp(ctx context.Context) (*fleet, error) {
	if err := checkTools(); err != nil {
		return nil, err
	}
	f := &fleet{logf: func(format string, a ...any) { fmt.Fprintf(os.Stderr, "test/fleet: "+format+"\n", a...) }}
	var err error
	if f.repo, f.dir, err = testenv.Workspace("lodis-fleet-"); err != nil {
		return nil, err
	}
	removeLeftovers(f.logf)
	start := time.Now()
	if err := f.build(ctx); err != nil {
		return f, err
	}
	built := time.Now()
	if f.net, err = newNetwork(ctx, nHosts, f.logf); err != nil {
		return f, err
	}
	if f.ctl, err = newController(ctx, filepath.Join(f.dir, "ansible"), f.net.fabric(), f.repo); err != nil {
		return f, err
	}
	f.hosts, err = bootHosts(ctx, f.net, nHosts)
	if err != nil {
		return f, err
	}
	booted := time.Now()
	pub, err := os.ReadFile(f.ctl.key + ".pub")
	if err != nil {
		return f, err
	}
	var known []string
	for _, h := range f.hosts {
		line, err := h.prepareSSH(ctx, f.ctl.dir, pub)
		if err != nil {
			return f, fmt.Errorf("%s: %w", h.name, err)
		}
		known = append(known, line)
	}
	if err := f.ctl.addHosts(f.hosts, known); err != nil {
		return f, err
	}
	for _, h := range f.hosts {
		if err := testenv.WaitFor(ctx, 30*time.Second, func() (bool, string) {
			out, err := f.ctl.ssh(ctx, h, "true")
			return err == nil, fmt.Sprint(out, err)
		}); err != nil {
			return f, fmt.Errorf("%s does not answer over SSH: %w", h.name, err)
		}
	}
	f.installPlay, err = f.ctl.run(ctx, "install.yml", map[string]any{
		"lodis_deb": f.deb, "lodis_ports": ports, "lodis_app_conf": appConf, "lodis_canary_soak": "2s",
	})
	if err != nil {
		return f, err
	}
	if f.installPlay.code != 0 {
		return f, fmt.Errorf("install.yml exited %d:\n%s", f.installPlay.code, f.installPlay.output)
	}
	installed := time.Now()
	var upstreams []string
	for _, h := range f.hosts {
		for _, p := range ports {
			upstreams = append(upstreams, fmt.Sprintf("%s:%d", h.addr, p))
		}
	}
	if f.front, err = startFront(ctx, f.ctl, filepath.Join(f.dir, "front"), upstreams); err != nil {
		return f, err
	}
	f.logf("set up in %s: build %s, network and %d hosts booted %s, install.yml %s, front %s",
		time.Since(start).Round(100*time.Millisecond), built.Sub(start).Round(100*time.Millisecond),
		nHosts, booted.Sub(built).Round(100*time.Millisecond), f.installPlay.took.Round(100*time.Millisecond),
		time.Since(installed).Round(100*time.Millisecond))
	return f, nil
}

// checkTools says how to install what the test needs.
func checkTools() error {
	if err := testenv.Check(); err != nil {
		return err
	}
	for tool, pkg := range map[string]string{"ip": "iproute2", "ssh": "openssh-client", "ssh-keygen": "openssh-client",
		"/usr/sbin/sshd": "openssh-server", "ansible-playbook": "ansible", "nginx": "nginx-light", "curl": "curl",
		"dpkg-deb": "dpkg", "make": "make"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found: install it with 'apt-get install -y %s' (or run test/deps.sh)", tool, pkg)
		}
	}
	if err := exec.Command("/usr/bin/python3", "-c", "import apt").Run(); err != nil {
		return errors.New("python3-apt not found (Ansible's apt module needs it on the hosts): install it with 'apt-get install -y python3-apt' (or run test/deps.sh)")
	}
	return nil
}

// build makes the packages (`make deb`, versions installedVersion and
// repoVersion) and the two releases, all at once: most of it is linking
// and compressing, which the cores share.
func (f *fleet) build(ctx context.Context) error {
	bins := filepath.Join(f.dir, "bin")
	if err := os.MkdirAll(bins, 0o755); err != nil {
		return err
	}
	var wg sync.WaitGroup
	errs := make([]error, 4)
	wg.Go(func() { f.deb, errs[0] = f.makeDeb(ctx, installedVersion) })
	wg.Go(func() { f.repoDeb, errs[1] = f.makeDeb(ctx, repoVersion) })
	wg.Go(func() { f.good, errs[2] = testenv.Build(f.repo, bins, testenv.Spec{Version: goodVersion}) })
	wg.Go(func() {
		f.bad, errs[3] = testenv.Build(f.repo, bins, testenv.Spec{Version: badVersion, Fault: buildinfo.FaultUnhealthyAfter1s})
	})
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	var err error
	if f.goodSHA, err = buildinfo.FileSHA256(f.good); err != nil {
		return err
	}
	f.badSHA, err = buildinfo.FileSHA256(f.bad)
	return err
}

// makeDeb runs `make deb` for version, into a directory of its own, and
// returns the package's path.
func (f *fleet) makeDeb(ctx context.Context, version string) (string, error) {
	out := filepath.Join(f.dir, "dist-"+version)
	c := exec.CommandContext(ctx, "make", "-s", "-C", f.repo, "deb")
	c.Env = append(os.Environ(), "VERSION="+version, "OUT="+out)
	if b, err := c.CombinedOutput(); err != nil {
		return "", fmt.Errorf("make deb VERSION=%s: %w: %s", version, err, b)
	}
	debs, _ := filepath.Glob(filepath.Join(out, "*.deb"))
	if len(debs) != 1 {
		return "", fmt.Errorf("make deb VERSION=%s left %d packages in %s, want one", version, len(debs), out)
	}
	return debs[0], nil
}

// dumpJournals prints the tail of each host's lodis journal, for a failed run.
func (f *fleet) dumpJournals() {
	for _, h := range f.hosts {
		if h.m != nil {
			fmt.Fprintf(os.Stderr, "--- %s: journal of lodis-supervisor, lodis-upgrade, ssh (last 150 lines) ---\n%s\n",
				h.name, h.journal(context.Background(), 150))
		}
	}
	if f.front != nil {
		fmt.Fprintf(os.Stderr, "--- front nginx error log ---\n%s\n", f.front.errorLog())
	}
}

// Close tears everything down, in order: the front, SSH's control masters,
// the hosts, the namespaces (with anything left in them), the files. It is
// safe to call more than once, and from a signal handler.
func (f *fleet) Close() error {
	f.closeOnce.Do(func() {
		var errs []error
		f.front.Close()
		if f.ctl != nil {
			f.ctl.Close()
		}
		var wg sync.WaitGroup
		herrs := make([]error, len(f.hosts))
		for i, h := range f.hosts {
			if h.m != nil {
				wg.Go(func() { herrs[i] = h.m.Close() })
			}
		}
		wg.Wait()
		errs = append(errs, herrs...)
		if f.net != nil {
			errs = append(errs, f.net.Close())
		}
		if f.dir != "" {
			errs = append(errs, os.RemoveAll(f.dir))
		}
		f.closeErr = errors.Join(errs...)
	})
	return f.closeErr
}
