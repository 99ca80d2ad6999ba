package upgrade

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// store makes a release store whose current points at a file.
func store(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for _, d := range []string{"releases", "incoming", "rejected"} {
		os.Mkdir(filepath.Join(root, d), 0o755)
	}
	bin := filepath.Join(t.TempDir(), "lodis")
	os.WriteFile(bin, []byte("release one"), 0o755)
	os.Symlink(bin, filepath.Join(root, "current"))
	return root
}

func TestBadInput(t *testing.T) {
	root := store(t)
	key := filepath.Join(t.TempDir(), "key")
	os.WriteFile(key, []byte("not a key"), 0o600)
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unknown flag", []string{"-bogus"}, 2, "flag provided but not defined: -bogus"},
		{"bad sandbox", []string{"-sandbox", "docker"}, 2, `bad -sandbox "docker": want systemd or none`},
		{"negative settle", []string{"-settle", "-1s"}, 2, "bad -settle -1s"},
		{"extra argument", []string{"now"}, 2, `unexpected argument "now"`},
		{"bad log level", []string{"-log-level", "loud"}, 2, `bad log level "loud"`},
		{"unreadable key", []string{"-root", root, "-public-key", key}, 1, "not an ed25519 public key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			code := Main(tc.args, &stderr)
			if code != tc.code || !strings.Contains(stderr.String(), tc.want) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", code, stderr.String(), tc.code, tc.want)
			}
			if n := strings.Count(strings.TrimSpace(stderr.String()), "\n"); tc.code == 2 && n > 0 {
				t.Fatalf("usage error takes %d lines, want one: %q", n+1, stderr.String())
			}
		})
	}
	// Nothing was changed by any of the bad inputs.
	if des, _ := os.ReadDir(filepath.Join(root, "releases")); len(des) > 0 {
		t.Fatalf("bad input changed the store: %v", des)
	}
}
