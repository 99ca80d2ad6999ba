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

func TestValidateRunsVersionAndSelftest(t *testing.T) {
	s := newRoot(t, bins.good)
	v := &Validator{Arch: "amd64", Sandbox: Direct{}, Timeout: 10 * time.Second}
	for _, tc := range []struct {
		name, bin, check, want string
	}{
		{"good", bins.good, "", ""},
		{"selftest fails", bins.selftestFails, "selftest", "`lodis selftest` exited with status 1: lodis selftest: FAILED: test fault selftest-fails"},
		{"exits at start-up", bins.exitNow, "version", "`lodis version` exited with status 3"},
		{"not lodis", "/bin/true", "version", "does not report this file's sha256"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := stage(t, s, tc.bin)
			defer s.Discard(c)
			rep, err := v.Validate(context.Background(), c, nil)
			if tc.check == "" {
				if err != nil || !strings.HasPrefix(rep.Version, "t-good") || !strings.Contains(rep.Selftest, "ok") {
					t.Fatalf("Validate = %+v, %v; want version t-good and a selftest ok", rep, err)
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

func TestDirectSandboxTimesOut(t *testing.T) {
	start := time.Now()
	_, err := Direct{}.Run(context.Background(), "/bin/sleep", []string{"10"}, 200*time.Millisecond)
	if err == nil || err.Error() != "timed out after 200ms" {
		t.Fatalf("Run(sleep 10) = %v, want timed out after 200ms", err)
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Fatalf("the timeout took %s to act", d)
	}
}

func TestSplitSystemdRunOutput(t *testing.T) {
	stderr := "Running as unit: run-u5.service\nlodis selftest: FAILED: boom\nFinished with result: exit-code\n" +
		"Main processes terminated with: code=exited/status=1\nService runtime: 275ms\n"
	out, result, status := splitSystemdRun([]byte("stdout line\n"), []byte(stderr))
	if string(out) != "stdout line\nlodis selftest: FAILED: boom\n" || result != "exit-code" || status != "code=exited/status=1" {
		t.Fatalf("split = %q, %q, %q", out, result, status)
	}
}

// TestWorkerSandboxIsTheUnits: the validation sandbox is the worker unit's
// hardening, the only copy of it, plus loopback-only networking.
func TestWorkerSandboxIsTheUnits(t *testing.T) {
	sb, err := WorkerSandbox()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"DynamicUser=yes", "SystemCallFilter=@system-service", "ProtectSystem=strict", "IPAddressDeny=any", "IPAddressAllow=localhost"} {
		if !slices.Contains(sb, want) {
			t.Errorf("WorkerSandbox lacks %q: %v", want, sb)
		}
	}
	if len(sb) < 20 {
		t.Fatalf("only %d hardening settings: parse error?", len(sb))
	}
}
