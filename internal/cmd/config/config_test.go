package config

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	good, bad := filepath.Join(dir, "good.conf"), filepath.Join(dir, "bad.conf")
	os.WriteFile(good, []byte("APP_ARGS=app.py\nREADY=health\n"), 0o644)
	os.WriteFile(bad, []byte("# app\nREADY=health\nPORT=80\n"), 0o644)
	for _, c := range []struct {
		args       []string
		code       int
		out, errln string
	}{
		{[]string{"check", "-f", good, "-show"}, 0, `exec-app -- "app.py"`, "is good"},
		{[]string{"check", "-f", bad}, 1, "", bad + ":3: unknown key PORT"},
		{[]string{"check", "-f", filepath.Join(dir, "none")}, 0, "", "does not exist: the default app"},
		{[]string{"check", "-bogus"}, 2, "", "-bogus"},
		{nil, 2, "", "want 'lodis config check"},
	} {
		var out, errb bytes.Buffer
		code := run(c.args, &out, &errb)
		if code != c.code || !strings.Contains(out.String(), c.out) || !strings.Contains(errb.String(), c.errln) ||
			strings.Count(strings.TrimSpace(errb.String()), "\n") > 0 {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want %d, %q and one line with %q", c.args, code, out.String(), errb.String(), c.code, c.out, c.errln)
		}
	}
}
