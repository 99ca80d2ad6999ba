package sign

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lodis/lodis/internal/release"
)

func TestSign(t *testing.T) {
	dir := t.TempDir()
	priv, pub, err := release.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, "upgrade.key")
	os.WriteFile(key, priv, 0o600)
	os.WriteFile(filepath.Join(dir, "upgrade.pub"), pub, 0o644)
	bin := filepath.Join(dir, "lodis")
	os.WriteFile(bin, []byte("a binary"), 0o755)
	var stderr bytes.Buffer
	if code := Main([]string{"-key", key, bin}, &stderr); code != 0 {
		t.Fatalf("sign: %d %s", code, stderr.String())
	}
	sig, _ := os.ReadFile(bin + ".sig")
	k, _ := release.LoadPublicKey(filepath.Join(dir, "upgrade.pub"))
	if err := release.CheckSignature(bin, sig, k, "upgrade.pub"); err != nil {
		t.Fatalf("the signature written does not verify: %v", err)
	}
	bad := filepath.Join(dir, "bad")
	os.WriteFile(bad, []byte("nope"), 0o600)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "want exactly one BINARY"},
		{[]string{"-key", bad, bin}, 1, `not a PEM "PRIVATE KEY"`},
	} {
		stderr.Reset()
		if code := Main(tc.args, &stderr); code != tc.code || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("sign %v: exit %d, stderr %q; want %d and %q", tc.args, code, stderr.String(), tc.code, tc.want)
		}
	}
}
