package isolation

import (
	"strings"
	"testing"
)

func TestJudge(t *testing.T) {
	nowhere := func(string) string { return "" }
	onHost := func(p string) string {
		if strings.HasPrefix(p, "/host/") {
			return "root on the host"
		}
		return ""
	}
	state := func(p string) bool { return strings.HasPrefix(p, "/var/lib/app/") }
	for _, c := range []struct {
		name string
		a    Attempt
		held bool
		why  string
	}{
		{"failed", Attempt{Errno: "EPERM"}, true, "EPERM"},
		{"succeeded", Attempt{Done: true, Detail: "read 7 bytes"}, false, "ALLOWED: read 7 bytes"},
		{"a write that is not private", Attempt{Done: true, Created: []string{"/x"}}, false, "ALLOWED: "},
		{"a private write", Attempt{Done: true, Private: true, Created: []string{"/tmp/x"}}, true, "private: not visible outside"},
		{"a private write seen outside", Attempt{Done: true, Private: true, Created: []string{"/tmp/x", "/host/y"}}, false,
			"ALLOWED, visible outside: /host/y (seen by root on the host)"},
		{"the state directory", Attempt{Done: true, Private: true, Created: []string{"/var/lib/app/x"}}, true, "state directory only"},
		{"the state directory and a private place", Attempt{Done: true, Private: true, Created: []string{"/var/lib/app/x", "/tmp/y"}}, true,
			"private or the state directory: not visible outside"},
		{"info, done", Attempt{Info: true, Done: true, Detail: "3 sockets"}, true, "info: 3 sockets"},
		{"info, failed", Attempt{Info: true, Errno: "EACCES"}, true, "info: EACCES"},
	} {
		v := Judge(c.a, onHost, state)
		if c.name == "a private write" || c.name == "failed" {
			v = Judge(c.a, nowhere, nil)
		}
		if v.Held != c.held || v.Why != c.why {
			t.Errorf("%s: got %+v, want held=%v why=%q", c.name, v, c.held, c.why)
		}
	}
}

const workerText = `[Service]
ExecStart=/bin/true

# Sandboxing: comments go
DynamicUser=yes
PrivateTmp=yes
`

func TestSplitWorker(t *testing.T) {
	base, lines, err := SplitWorker(workerText)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(base, "DynamicUser") || !strings.HasSuffix(base, "ExecStart=/bin/true\n\n") {
		t.Errorf("base:\n%s", base)
	}
	if strings.Join(lines, ",") != "DynamicUser=yes,PrivateTmp=yes" {
		t.Errorf("sandbox lines: %q", lines)
	}
	got := Variant(base, []string{"PrivateNetwork=yes"})
	if !strings.HasPrefix(got, "[Unit]\nStartLimitIntervalSec=0\n") || !strings.HasSuffix(got, "ExecStart=/bin/true\n\nPrivateNetwork=yes\n") {
		t.Errorf("variant:\n%s", got)
	}
	for _, bad := range []string{"[Service]\nExecStart=/bin/true\n", "# Sandboxing\n[Service]\n"} {
		if _, _, err := SplitWorker(bad); err == nil {
			t.Errorf("SplitWorker(%q): no error", bad)
		}
	}
}
