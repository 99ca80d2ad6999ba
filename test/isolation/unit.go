package isolation

import (
	"fmt"
	"strings"
)

// SandboxMarker is the comment in the worker's settings
// (units/lodis-worker.conf) that starts its sandboxing; they run to the end.
const SandboxMarker = "# Sandboxing"

// WorkerDropIn is where the worker's settings are installed, as a drop-in of
// the lodis@.service template.
const WorkerDropIn = "/usr/lib/systemd/system/lodis@.service.d/10-worker.conf"

// SplitWorker cuts the worker's settings (lodis-worker.conf as installed)
// into what runs the worker (everything before SandboxMarker) and its
// sandboxing lines (comments and blank lines dropped). It fails when the
// marker or the [Service] section is missing.
func SplitWorker(text string) (base string, sandbox []string, err error) {
	i := strings.Index(text, SandboxMarker)
	if i < 0 || !strings.Contains(text[:i], "[Service]") {
		return "", nil, fmt.Errorf("worker settings: no [Service] section followed by %q: not lodis-worker.conf", SandboxMarker)
	}
	return text[:i], SandboxLines(text[i:]), nil
}

// SandboxLines returns the setting lines of text: comments, section
// headers and blank lines dropped.
func SandboxLines(text string) []string {
	var lines []string
	for _, l := range strings.Split(text, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(l, ";") || strings.HasPrefix(l, "[") {
			continue
		}
		lines = append(lines, l)
	}
	return lines
}

// VariantPath is where Variant is written for one port: a drop-in of the
// same name as the installed one, which it takes the place of.
func VariantPath(port int) string {
	return fmt.Sprintf("/etc/systemd/system/lodis@%d.service.d/10-worker.conf", port)
}

// Variant is the worker's settings made of base and sandbox lines, with
// StartLimitIntervalSec=0 so that measurements and tests never hit the start
// limit.
func Variant(base string, sandbox []string) string {
	return "[Unit]\nStartLimitIntervalSec=0\n\n" + base + strings.Join(sandbox, "\n") + "\n"
}
