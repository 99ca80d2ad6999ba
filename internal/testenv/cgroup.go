package testenv

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/prometheus/procfs"
)

// cgroups are the control groups of one machine: a group of its own in
// every cgroup hierarchy mounted here, beneath this process's own group.
//
// systemd-nspawn run with --keep-unit and no systemd on the host puts the
// container in "payload" beneath its own group: two machines booted from
// one process would share that tree, so the unit lodis@8080.service of one
// would be the same group as the other's, each systemd seeing (and
// stopping) the other's processes. With a group of its own for each
// machine, nspawn's payload is the machine's alone.
type cgroups []string

// newCgroups makes a group named name in every hierarchy this process is
// in (cgroup v1 controllers but cpuset, name=systemd, the unified cgroup2
// tree), as /proc/self/cgroup and /proc/self/mountinfo tell.
func newCgroups(name string) (cgroups, error) {
	self, err := procfs.Self()
	if err != nil {
		return nil, fmt.Errorf("machine cgroup: %w", err)
	}
	own, err := self.Cgroups()
	if err != nil {
		return nil, fmt.Errorf("machine cgroup: %w", err)
	}
	mounts, err := self.MountInfo()
	if err != nil {
		return nil, fmt.Errorf("machine cgroup: %w", err)
	}
	var cg cgroups
	for _, c := range own {
		if slices.Contains(c.Controllers, "cpuset") {
			// A new v1 cpuset group takes no process until its CPUs and
			// memory nodes are set, and systemd on v1 uses no cpuset.
			continue
		}
		m := mountOf(c, mounts)
		if m == nil {
			continue
		}
		rel := strings.TrimPrefix(c.Path, m.Root) // a mount of a subtree only
		dir := filepath.Join(m.MountPoint, rel, name)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			cg.remove()
			return nil, fmt.Errorf("machine cgroup: %w", err)
		}
		cg = append(cg, dir)
	}
	if len(cg) == 0 {
		return nil, errors.New("machine cgroup: no cgroup hierarchy is mounted")
	}
	slices.Sort(cg)
	return cg, nil
}

// mountOf is where hierarchy c is mounted: the cgroup2 mount for the unified
// tree (ID 0), else the cgroup mount whose options name c's controllers.
func mountOf(c procfs.Cgroup, mounts []*procfs.MountInfo) *procfs.MountInfo {
	for _, m := range mounts {
		switch {
		case c.HierarchyID == 0 && m.FSType == "cgroup2":
			return m
		case c.HierarchyID != 0 && m.FSType == "cgroup" && len(c.Controllers) > 0:
			all := true
			for _, ctl := range c.Controllers {
				k, v, _ := strings.Cut(ctl, "=") // name=systemd
				if got, ok := m.SuperOptions[k]; !ok || got != v {
					all = false
				}
			}
			if all {
				return m
			}
		}
	}
	return nil
}

// joinScript is a shell prelude that moves the shell into every group of cg
// (then it execs the machine); its arguments follow as "$@".
func (cg cgroups) joinScript() string {
	var b strings.Builder
	for _, d := range cg {
		fmt.Fprintf(&b, "echo $$ > '%s/cgroup.procs' || exit 125\n", d)
	}
	b.WriteString(`exec "$@"`)
	return b.String()
}

// remove removes the groups and whatever groups the machine's systemd made
// beneath them, deepest first; groups still holding a process stay.
func (cg cgroups) remove() {
	for _, root := range cg {
		var dirs []string
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			os.Remove(dirs[i])
		}
	}
}
