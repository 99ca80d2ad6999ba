package release

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/lodis/lodis/internal/appconf"
)

// Invalid is the error for a binary that must not be switched to. Check names
// the check that refused it; Error is the one-line reason recorded with the
// rejection, e.g. "elf: built for arm64 (EM_AARCH64); this machine runs amd64
// (EM_X86_64)".
type Invalid struct {
	Check string // file, elf, signature, version, selftest
	Err   error
}

func (e *Invalid) Error() string { return e.Check + ": " + e.Err.Error() }
func (e *Invalid) Unwrap() error { return e.Err }

func invalid(check, format string, args ...any) *Invalid {
	return &Invalid{Check: check, Err: fmt.Errorf(format, args...)}
}

// Validator decides whether a dropped app may become a release. It asks
// the app nothing about itself: it checks the file, then runs it as a
// worker would. Its checks run in this order, cheapest and safest first, so
// nothing is executed before the file is known to be complete, runnable on
// this machine and signed:
//
//  1. file: a regular, non-empty file with an execute bit (CheckFile, on the drop as copied)
//  2. format: an ELF executable for this architecture, not truncated
//     (CheckELF), or a script whose #! interpreter is an executable file
//     here (CheckScript)
//  3. signature: when PublicKey is set, a valid detached signature (CheckSignature)
//  4. trial: the app run by Trial as a worker — the worker's sandbox, a
//     listening socket passed as systemd passes it — must answer its health
//     path, then exit on SIGTERM within its stop timeout
type Validator struct {
	// Arch is the GOARCH a binary must be built for; default runtime.GOARCH.
	Arch string
	// PublicKey, when not nil, makes a valid ed25519 signature mandatory.
	PublicKey ed25519.PublicKey
	// KeyPath names the key in reasons; informational.
	KeyPath string
	// Trial runs the candidate for check 4. Required.
	Trial Trial
	// App is how the app is run and checked (arguments, health path,
	// readiness, timeouts), as /etc/lodis/app.conf says.
	App appconf.Config
	// Timeout bounds the trial's wait for a first healthy answer, cold
	// start included; default 10 s.
	Timeout time.Duration
}

// Report is what validation learnt about an accepted app.
type Report struct {
	Kind    string // "elf" or "script"
	Version string // the health answer's "version", when it has one
	Trial   string // one line on the trial run
}

// Validate runs checks 2 to 4 on the staged candidate (check 1 concerns the
// drop itself: run CheckFile on it first). sig is the detached signature that
// came with the drop, nil when none did. The error is an *Invalid for a bad
// app, anything else for a failure of the validation itself.
func (v *Validator) Validate(ctx context.Context, c *Candidate, sig []byte) (*Report, error) {
	kind, err := CheckFormat(c.Path, v.arch())
	if err != nil {
		return nil, err
	}
	if v.PublicKey != nil {
		if err := CheckSignature(c.Path, sig, v.PublicKey, v.KeyPath); err != nil {
			return nil, err
		}
	}
	if v.Trial == nil {
		return nil, errors.New("validator has no trial")
	}
	timeout := v.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	res, err := v.Trial.Run(ctx, c.Path, v.App, timeout)
	if err != nil {
		return nil, err
	}
	return &Report{Kind: kind, Version: res.Version, Trial: res.Summary}, nil
}

func (v *Validator) arch() string {
	if v.Arch != "" {
		return v.Arch
	}
	return runtime.GOARCH
}

// CheckFile refuses what cannot be a binary to run: not a regular file (a
// directory, a symlink, a device), an empty file, or a file with no execute
// bit. It looks at the drop as copied, before the store makes its own copy.
func CheckFile(path string) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return &Invalid{Check: "file", Err: err}
	}
	switch {
	case !fi.Mode().IsRegular():
		return invalid("file", "not a regular file (%s)", fi.Mode().Type())
	case fi.Size() == 0:
		return invalid("file", "empty file")
	case fi.Mode().Perm()&0o111 == 0:
		return invalid("file", "not executable: mode %04o has no execute bit (chmod +x before dropping)", fi.Mode().Perm())
	}
	return nil
}

// elfMachines maps GOARCH to the ELF machine it must carry.
var elfMachines = map[string]elf.Machine{
	"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64, "386": elf.EM_386, "arm": elf.EM_ARM,
	"riscv64": elf.EM_RISCV, "ppc64le": elf.EM_PPC64, "ppc64": elf.EM_PPC64, "s390x": elf.EM_S390,
	"loong64": elf.EM_LOONGARCH, "mips64le": elf.EM_MIPS, "mips64": elf.EM_MIPS,
}

func goarchOf(m elf.Machine) string {
	for a, em := range elfMachines {
		if em == m && a != "ppc64" && a != "mips64" {
			return a
		}
	}
	return "unknown"
}

// CheckELF refuses a file that is not a complete ELF executable for arch: no
// ELF magic (a script, a text file), a truncated file (headers or segments
// reach past its end: a copy cut short or still being written), another
// architecture, word size or byte order, or not an executable (a relocatable
// object, a core file).
func CheckELF(path, arch string) error {
	f, err := os.Open(path)
	if err != nil {
		return &Invalid{Check: "elf", Err: err}
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return &Invalid{Check: "elf", Err: err}
	}
	size := fi.Size()
	magic := make([]byte, 16)
	n, _ := io.ReadFull(f, magic)
	if n < 4 || !bytes.Equal(magic[:4], []byte(elf.ELFMAG)) {
		return invalid("elf", "not an ELF executable: starts with %q", printable(magic[:n]))
	}
	ef, err := elf.NewFile(f)
	if err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return invalid("elf", "truncated: the ELF headers reach past the end of the file (%d bytes)", size)
		}
		return invalid("elf", "unreadable ELF: %v", err)
	}
	defer ef.Close()
	want, known := elfMachines[arch]
	if !known {
		return invalid("elf", "unknown architecture %q to check against", arch)
	}
	if ef.Machine != want {
		return invalid("elf", "built for %s (%s); this machine runs %s (%s)", goarchOf(ef.Machine), ef.Machine, arch, want)
	}
	if wantClass := elfClass(arch); ef.Class != wantClass {
		return invalid("elf", "%s binary; this machine runs %s", ef.Class, wantClass)
	}
	if ef.Type != elf.ET_EXEC && ef.Type != elf.ET_DYN {
		return invalid("elf", "not an executable (ELF type %s)", ef.Type)
	}
	// A complete file holds every segment and section it describes.
	var need int64
	for _, p := range ef.Progs {
		need = max(need, int64(p.Off+p.Filesz))
	}
	for _, s := range ef.Sections {
		if s.Type != elf.SHT_NOBITS {
			need = max(need, int64(s.Offset+s.FileSize))
		}
	}
	if need > size {
		return invalid("elf", "truncated: %d of %d bytes (%d%%)", size, need, size*100/need)
	}
	if ef.Entry == 0 {
		return invalid("elf", "no entry point")
	}
	return nil
}

func elfClass(arch string) elf.Class {
	switch arch {
	case "386", "arm":
		return elf.ELFCLASS32
	}
	return elf.ELFCLASS64
}

func printable(b []byte) string {
	var s strings.Builder
	for _, c := range b {
		if c >= 0x20 && c < 0x7f {
			s.WriteByte(c)
		} else {
			s.WriteByte('.')
		}
	}
	return s.String()
}

func lastLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return truncate(s, 200)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
