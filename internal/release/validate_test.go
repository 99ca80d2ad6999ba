package release

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lodis/lodis/internal/appconf"
)

func writeFile(t *testing.T, name string, b []byte, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, mode); err != nil {
		t.Fatal(err)
	}
	os.Chmod(p, mode)
	return p
}

// patched is a copy of the good binary with two bytes of its ELF header set.
func patched(t *testing.T, off int, v uint16) string {
	t.Helper()
	b, err := os.ReadFile(bins.good)
	if err != nil {
		t.Fatal(err)
	}
	binary.LittleEndian.PutUint16(b[off:], v)
	return writeFile(t, "patched", b, 0o755)
}

func TestCheckELF(t *testing.T) {
	good, _ := os.ReadFile(bins.good)
	for _, tc := range []struct {
		name, path, want string
	}{
		{"a lodis build for this machine", bins.good, ""},
		{"truncated copy", writeFile(t, "half", good[:len(good)/2], 0o755), "truncated"},
		{"cut in the headers", writeFile(t, "head", good[:100], 0o755), "truncated"},
		{"text file", writeFile(t, "text", []byte("#!/bin/sh\necho hi\n"), 0o755), `not an ELF executable: starts with "#!/bin/sh.echo h`},
		{"built for arm64", bins.arm64, "built for arm64 (EM_AARCH64); this machine runs amd64 (EM_X86_64)"},
		{"relocatable object", patched(t, 16, 1 /* ET_REL */), "not an executable (ELF type ET_REL)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckELF(tc.path, "amd64")
			if tc.want == "" {
				if err != nil {
					t.Fatalf("CheckELF = %v, want ok", err)
				}
				return
			}
			var inv *Invalid
			if !errors.As(err, &inv) || inv.Check != "elf" || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("CheckELF = %v, want an elf rejection containing %q", err, tc.want)
			}
		})
	}
}

func TestCheckFile(t *testing.T) {
	dir := t.TempDir()
	link := filepath.Join(dir, "link")
	os.Symlink(bins.good, link)
	for _, tc := range []struct {
		name, path, want string
	}{
		{"executable", bins.good, ""},
		{"no execute bit", writeFile(t, "noexec", []byte("\x7fELF"), 0o644), "not executable: mode 0644 has no execute bit"},
		{"empty", writeFile(t, "empty", nil, 0o755), "empty file"},
		{"directory", dir, "not a regular file"},
		{"symlink", link, "not a regular file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckFile(tc.path)
			if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("CheckFile = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestValidateTrial(t *testing.T) {
	s := newRoot(t, bins.good)
	script := func(body string) string { return writeFile(t, "app.sh", []byte(body), 0o755) }
	ignoreTerm := appconf.Default()
	ignoreTerm.Args, ignoreTerm.StopTimeout = []string{"ignore-term"}, time.Second
	for _, tc := range []struct {
		name, bin string
		app       func(c *appconf.Config)
		check     string
		want      string
	}{
		{"good", bins.good, nil, "", ""},
		{"exits at start-up", bins.exitNow, nil, "trial", "exited before it answered"},
		{"not an app at all", "/bin/true", nil, "trial", "exited before it answered"},
		{"health answers 503", bins.unhealthy, nil, "trial", "answered 503 Service Unavailable three times in a row"},
		{"never answers", script("#!/bin/sh\nexec sleep 30\n"), nil, "trial", "no healthy answer on /__/health within 1s"},
		{"ignores SIGTERM", os.Args[0], func(c *appconf.Config) { *c = ignoreTerm }, "trial", "ignored SIGTERM"},
		{"interpreter missing", script("#!/usr/bin/no-such-python3\nprint(1)\n"), nil, "script", "the interpreter /usr/bin/no-such-python3 is missing"},
		{"relative interpreter", script("#!python3\n"), nil, "script", "not an absolute path"},
		{"text", writeFile(t, "notes.txt", []byte("hello\n"), 0o755), nil, "elf", "not an ELF executable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := &Validator{Arch: "amd64", Trial: DirectTrial{}, App: appconf.Default(), Timeout: time.Second}
			if tc.check == "" {
				v.Timeout = 20 * time.Second // a busy machine starts a worker slowly
			}
			if tc.app != nil {
				tc.app(&v.App)
			}
			c := stage(t, s, tc.bin)
			defer s.Discard(c)
			rep, err := v.Validate(context.Background(), c, nil)
			if tc.check == "" {
				if err != nil || !strings.HasPrefix(rep.Version, "t-good") || rep.Kind != "elf" || !strings.Contains(rep.Trial, "stopped") {
					t.Fatalf("Validate = %+v, %v; want version t-good from its health answer", rep, err)
				}
				return
			}
			var inv *Invalid
			if !errors.As(err, &inv) || inv.Check != tc.check || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want a %s rejection containing %q", err, tc.check, tc.want)
			}
		})
	}
}

// TestWorkerSandboxIsTheUnits: the validation sandbox is the worker unit's
// hardening, the only copy of it, plus loopback-only networking.
func TestWorkerSandboxIsTheUnits(t *testing.T) {
	sb, err := WorkerSandbox()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"DynamicUser=yes", "PrivateNetwork=yes", "RootDirectory=/run/lodis-root", "ProtectSystem=strict", "IPAddressDeny=any", "IPAddressAllow=localhost"} {
		if !slices.Contains(sb, want) {
			t.Errorf("WorkerSandbox lacks %q: %v", want, sb)
		}
	}
	if len(sb) < 20 {
		t.Fatalf("only %d hardening settings: parse error?", len(sb))
	}
}
