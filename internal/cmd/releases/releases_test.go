package releases

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lodis/lodis/internal/release"
)

func TestReleases(t *testing.T) {
	root := t.TempDir()
	os.Mkdir(filepath.Join(root, "releases"), 0o755)
	s := release.NewStore(root)
	commit := func(content, version string) string {
		c, err := s.Stage(strings.NewReader(content))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Commit(c, version, "incoming"); err != nil {
			t.Fatal(err)
		}
		return c.SHA256
	}
	one, two := commit("one", "u1"), commit("two", "u2")
	os.Symlink(s.Path(one), filepath.Join(root, "current"))
	if err := s.Activate(two); err != nil {
		t.Fatal(err)
	}
	s.SetPrevious(one)
	var b bytes.Buffer
	if err := printReleases(&b, io.Discard, root, false); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "u2") || !strings.Contains(b.String(), "active") || !strings.Contains(b.String(), "previous") {
		t.Fatalf("lodis releases:\n%s", b.String())
	}
	var stderr bytes.Buffer
	if code := Main([]string{"-root", filepath.Join(root, "nope")}, &stderr); code != 1 || !strings.Contains(stderr.String(), "lodis releases: read") {
		t.Fatalf("bad root: exit %d, %q", code, stderr.String())
	}
}
