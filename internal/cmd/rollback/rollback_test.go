package rollback

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBadInput(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"releases", "incoming", "rejected"} {
		os.Mkdir(filepath.Join(root, d), 0o755)
	}
	bin := filepath.Join(t.TempDir(), "lodis")
	os.WriteFile(bin, []byte("release one"), 0o755)
	os.Symlink(bin, filepath.Join(root, "current"))
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unknown flag", []string{"-bogus"}, 2, "flag provided but not defined: -bogus"},
		{"no previous release", []string{"-root", root}, 1, "no previous release to return to"},
		{"an unknown release", []string{"-root", root, "-to", "ffff"}, 1, `bad -to "ffff": no release in the store starts with it`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			code := Main(tc.args, &stderr)
			if code != tc.code || !strings.Contains(stderr.String(), tc.want) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", code, stderr.String(), tc.code, tc.want)
			}
		})
	}
	// Only release one was imported: no rollback was started.
	if des, _ := os.ReadDir(filepath.Join(root, "releases")); len(des) > 1 {
		t.Fatalf("bad input changed the store: %v", des)
	}
	if _, err := os.Stat(filepath.Join(root, "rollout.json")); err == nil {
		t.Fatal("a bad rollback left a roll-out behind")
	}
}
