package release

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/lodis/lodis/internal/buildinfo"
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

// Validator decides whether a binary may become a release. Its checks run in
// this order, cheapest and safest first, so nothing is executed before the
// file is known to be a complete, signed executable for this machine:
//
//  1. file: a regular, non-empty file with an execute bit (CheckFile, on the drop as copied)
//  2. elf: an ELF executable for this architecture, not truncated (CheckELF)
//  3. signature: when PublicKey is set, a valid detached signature (CheckSignature)
//  4. version: `lodis version` exits 0 within Timeout and names the file's own SHA-256
//  5. selftest: `lodis selftest` exits 0 within Timeout
//
// Steps 4 and 5 run in Sandbox.
type Validator struct {
	// Arch is the GOARCH the binary must be built for; default runtime.GOARCH.
	Arch string
	// PublicKey, when not nil, makes a valid ed25519 signature mandatory.
	PublicKey ed25519.PublicKey
	// KeyPath names the key in reasons; informational.
	KeyPath string
	// Sandbox runs the binary for steps 4 and 5. Required.
	Sandbox Sandbox
	// Timeout bounds each sandboxed run; default 10 s.
	Timeout time.Duration
}

// Report is what validation learnt about an accepted binary.
type Report struct {
	Version  string
	Selftest string // the selftest's closing line
}

// Validate runs checks 2 to 5 on the staged candidate (check 1 concerns the
// drop itself: run CheckFile on it first). sig is the detached signature that
// came with the drop, nil when none did. The error is an *Invalid for a bad
// binary, anything else for a failure of the validation itself.
func (v *Validator) Validate(ctx context.Context, c *Candidate, sig []byte) (*Report, error) {
	if err := CheckELF(c.Path, v.arch()); err != nil {
		return nil, err
	}
	if v.PublicKey != nil {
		if err := CheckSignature(c.Path, sig, v.PublicKey, v.KeyPath); err != nil {
			return nil, err
		}
	}
	if v.Sandbox == nil {
		return nil, errors.New("validator has no sandbox")
	}
	timeout := v.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	out, err := v.Sandbox.Run(ctx, c.Path, []string{"version"}, timeout)
	if err != nil {
		return nil, &Invalid{Check: "version", Err: fmt.Errorf("`lodis version` %w", err)}
	}
	ver, sum := parseVersion(out)
	if sum != c.SHA256 {
		return nil, invalid("version", "`lodis version` does not report this file's sha256 %s (got %q): not a lodis binary", buildinfo.ShortSHA(c.SHA256), firstLine(out))
	}
	out, err = v.Sandbox.Run(ctx, c.Path, []string{"selftest", "-timeout", timeout.String()}, timeout+2*time.Second)
	if err != nil {
		return nil, &Invalid{Check: "selftest", Err: fmt.Errorf("`lodis selftest` %w", err)}
	}
	return &Report{Version: ver, Selftest: lastLine(out)}, nil
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

// parseVersion reads `lodis version` output: "lodis VERSION" then
// "sha256: HEX" among the lines.
func parseVersion(out []byte) (version, sha string) {
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if v, ok := strings.CutPrefix(line, "lodis "); ok && version == "" {
			version = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(line, "sha256: "); ok {
			sha = strings.TrimSpace(v)
		}
	}
	return version, sha
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	return truncate(s, 120)
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

// exitDetail turns a run's failure into a short reason.
func exitDetail(code int, out []byte) string {
	d := "exited with status " + strconv.Itoa(code)
	if l := lastLine(out); l != "" {
		d += ": " + l
	}
	return d
}
