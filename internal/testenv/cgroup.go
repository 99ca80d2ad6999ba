package testenv

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
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
// tree).
func newCgroups(name string) (cgroups, error) {
	mounts, err := cgroupMounts()
	if err != nil {
		return nil, err
	}
	own, err := ownCgroups()
	if err != nil {
		return nil, err
	}
	var cg cgroups
	for key, mnt := range mounts {
		rel, ok := own[key]
		if !ok || key == "cpuset" {
			// cpuset: a new v1 group takes no process until its CPUs and
			// memory nodes are set, and systemd on v1 uses no cpuset.
			continue
		}
		rel = strings.TrimPrefix(rel, mnt.root) // a mount of a subtree only
		dir := filepath.Join(mnt.point, rel, name)
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

// cgroupMount is where a hierarchy is mounted: point, showing its group root.
type cgroupMount struct{ root, point string }

// cgroupMounts maps each hierarchy's key in /proc/self/cgroup ("0" for the
// unified one, else its controllers or name=) to where it is mounted.
func cgroupMounts() (map[string]cgroupMount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("machine cgroup: %w", err)
	}
	defer f.Close()
	mounts := map[string]cgroupMount{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ID parent major:minor root mountpoint opts [optional...] - fstype source superopts
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		fields, tail := strings.Fields(pre), strings.Fields(post)
		if len(fields) < 5 || len(tail) < 3 {
			continue
		}
		switch tail[0] {
		case "cgroup2":
			mounts["0"] = cgroupMount{fields[3], fields[4]}
		case "cgroup":
			var keys []string
			for _, o := range strings.Split(tail[2], ",") {
				if o != "rw" && o != "ro" && !strings.HasPrefix(o, "relatime") && o != "nosuid" && o != "nodev" && o != "noexec" && o != "clone_children" && !strings.HasPrefix(o, "release_agent=") && o != "xattr" {
					keys = append(keys, o)
				}
			}
			mounts[strings.Join(keys, ",")] = cgroupMount{fields[3], fields[4]}
		}
	}
	return mounts, sc.Err()
}

// ownCgroups maps each hierarchy's key to this process's group in it, from
// /proc/self/cgroup ("ID:controllers:path"; ID 0 with no controllers is the
// unified tree).
func ownCgroups() (map[string]string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, fmt.Errorf("machine cgroup: %w", err)
	}
	own := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		key := parts[1]
		if parts[0] == "0" && key == "" {
			key = "0"
		}
		own[key] = parts[2]
	}
	return own, nil
}
