package report

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Machine says where and how the figures of a report were measured. Every
// field is required: Check flags an empty one.
type Machine struct {
	OS      string    // distribution, from /etc/os-release PRETTY_NAME
	CPU     string    // processor model, from /proc/cpuinfo
	Cores   int       // logical CPUs usable by the process
	Memory  uint64    // total memory in bytes, from /proc/meminfo
	Kernel  string    // kernel release, as uname -r
	Systemd string    // first line of systemctl --version, e.g. "systemd 252 (252.39-1~deb12u1)"
	Go      string    // Go toolchain that built the benchmark
	Date    time.Time // when the run started
	Command string    // the exact command that produced the report, e.g. "make bench"
}

// DetectMachine describes the machine it runs on, dated now, for a report
// produced by command. It fills every field it can; the error lists the ones
// it could not read (those stay empty, and Check will flag them).
func DetectMachine(ctx context.Context, command string) (Machine, error) {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version(), Date: time.Now().UTC(), Command: command}
	var errs []error
	var err error
	if m.OS, err = keyValue("/etc/os-release", "PRETTY_NAME", "="); err != nil {
		errs = append(errs, err)
	}
	m.OS = strings.Trim(m.OS, `"`)
	if m.CPU, err = keyValue("/proc/cpuinfo", "model name", ":"); err != nil {
		errs = append(errs, err)
	}
	if mem, err := keyValue("/proc/meminfo", "MemTotal", ":"); err != nil {
		errs = append(errs, err)
	} else if m.Memory, err = parseKiB(mem); err != nil {
		errs = append(errs, fmt.Errorf("/proc/meminfo MemTotal: %w", err))
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err != nil {
		errs = append(errs, fmt.Errorf("kernel release: %w", err))
	} else {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if m.Systemd, err = systemdVersion(ctx); err != nil {
		errs = append(errs, err)
	}
	return m, errors.Join(errs...)
}

// keyValue returns the value of the first line "key<sep>value" in file.
func keyValue(file, key, sep string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", file, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), sep)
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v), nil
		}
	}
	return "", fmt.Errorf("no %s in %s", key, file)
}

// parseKiB parses "24555120 kB" into bytes.
func parseKiB(s string) (uint64, error) {
	n, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(s, "kB")), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse %q: %w", s, err)
	}
	return n << 10, nil
}

func systemdVersion(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "systemctl", "--version").Output()
	if err != nil {
		return "", fmt.Errorf("systemctl --version: %w", err)
	}
	line, _, _ := strings.Cut(string(out), "\n")
	if line = strings.TrimSpace(line); line == "" {
		return "", errors.New("systemctl --version: no output")
	}
	return line, nil
}

// problems lists the empty fields of m.
func (m Machine) problems() []error {
	var errs []error
	for _, f := range []struct {
		name  string
		empty bool
	}{
		{"OS", m.OS == ""}, {"CPU", m.CPU == ""}, {"cores", m.Cores <= 0}, {"memory", m.Memory == 0},
		{"kernel", m.Kernel == ""}, {"systemd", m.Systemd == ""}, {"Go", m.Go == ""},
		{"date", m.Date.IsZero()}, {"command", m.Command == ""},
	} {
		if f.empty {
			errs = append(errs, fmt.Errorf("machine: %s is empty", f.name))
		}
	}
	return errs
}

func gib(b uint64) string {
	return strconv.FormatFloat(float64(b)/(1<<30), 'f', 1, 64) + " GiB"
}
