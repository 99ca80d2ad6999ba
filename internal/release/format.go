package release

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// CheckFormat refuses a file that cannot run on this machine: it must be an
// ELF executable for arch (CheckELF) or a script whose interpreter is here
// (CheckScript). kind is "elf" or "script".
func CheckFormat(path, arch string) (kind string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return "", &Invalid{Check: "format", Err: err}
	}
	head := make([]byte, 4)
	n, _ := io.ReadFull(f, head)
	f.Close()
	if n >= 2 && head[0] == '#' && head[1] == '!' {
		return "script", CheckScript(path)
	}
	return "elf", CheckELF(path, arch)
}

// maxShebang is the longest #! line the kernel reads (BINPRM_BUF_SIZE).
const maxShebang = 256

// CheckScript refuses a script the kernel could not start: a #! line that
// is empty, too long or names a relative interpreter, or an interpreter
// that is not an executable regular file on this machine (followed through
// links, as the kernel does).
func CheckScript(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return &Invalid{Check: "script", Err: err}
	}
	defer f.Close()
	line, err := bufio.NewReaderSize(f, maxShebang+1).ReadSlice('\n')
	if len(line) > maxShebang || (err != nil && len(line) == maxShebang+1) {
		return invalid("script", "the #! line is longer than the %d bytes the kernel reads", maxShebang)
	}
	line = bytes.TrimRight(bytes.TrimPrefix(line, []byte("#!")), "\r\n")
	fields := strings.Fields(string(line))
	if len(fields) == 0 {
		return invalid("script", "the #! line names no interpreter")
	}
	interp := fields[0]
	if !filepath.IsAbs(interp) {
		return invalid("script", "the interpreter %q is not an absolute path", interp)
	}
	fi, err := os.Stat(interp)
	switch {
	case err != nil:
		return invalid("script", "the interpreter %s is missing on this machine", interp)
	case !fi.Mode().IsRegular():
		return invalid("script", "the interpreter %s is not a regular file", interp)
	case fi.Mode().Perm()&0o111 == 0:
		return invalid("script", "the interpreter %s is not executable", interp)
	}
	if len(fields) > 2 {
		// The kernel passes everything after the interpreter as one
		// argument: say so rather than let `env -S`-less lines surprise.
		return invalid("script", "the #! line %q has more than one argument after the interpreter; the kernel would pass %q as one", fmt.Sprint(string(line)), strings.Join(fields[1:], " "))
	}
	return nil
}
