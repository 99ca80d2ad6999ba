package keygen

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lodis/lodis/internal/release"
)

func TestKeygen(t *testing.T) {
	dir := t.TempDir()
	var stderr bytes.Buffer
	if code := Main([]string{"-dir", dir}, &stderr); code != 0 {
		t.Fatalf("keygen: %d %s", code, stderr.String())
	}
	if pub, err := release.LoadPublicKey(filepath.Join(dir, "upgrade.pub")); err != nil || pub == nil {
		t.Fatalf("the public key does not load: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "upgrade.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("private key: %v %v, want mode 0600", fi, err)
	}
	if code := Main([]string{"-dir", dir}, &stderr); code != 1 || !strings.Contains(stderr.String(), "not overwriting a key") {
		t.Fatalf("second keygen: %d %s; want a refusal to overwrite", code, stderr.String())
	}
}
