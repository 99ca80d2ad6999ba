package metricsproxy

import (
	"bytes"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/lodis/lodis/internal/statusapi"
)

func TestParseFlags(t *testing.T) {
	c, err := ParseFlags(nil, io.Discard)
	if err != nil || c.Socket != statusapi.DefaultSocket || c.Listen != "" || c.IdleTimeout != 10*time.Minute {
		t.Fatalf("defaults: %+v %v", c, err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--bogus"}, "-bogus"},
		{[]string{"extra"}, `unexpected argument "extra"`},
		{[]string{"--status-socket", ""}, "bad -status-socket: empty"},
		{[]string{"--idle-timeout", "-1s"}, "bad -idle-timeout -1s"},
		{[]string{"--idle-timeout", "soon"}, `invalid value "soon"`},
	} {
		_, err := ParseFlags(c.args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("ParseFlags(%v) = %v, want one line with %q", c.args, err, c.want)
		}
	}
}

// TestMainWithoutASocket: outside socket activation and without --listen
// there is nothing to serve: one clear line, exit 1; a bad --listen too.
func TestMainWithoutASocket(t *testing.T) {
	t.Setenv("LISTEN_FDS", "") // restored after the test
	os.Unsetenv("LISTEN_FDS")
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "not socket-activated"},
		{[]string{"--listen", "localhost"}, `bad listen address "localhost"`},
	} {
		var stderr bytes.Buffer
		code := Main(c.args, &stderr)
		if code != 1 || !strings.Contains(stderr.String(), c.want) || strings.Count(stderr.String(), "\n") != 1 {
			t.Errorf("Main(%v) = %d, %q; want 1 and one line with %q", c.args, code, stderr.String(), c.want)
		}
	}
	if code := Main([]string{"--bogus"}, io.Discard); code != 2 {
		t.Errorf("a bad flag: exit %d, want 2", code)
	}
}
