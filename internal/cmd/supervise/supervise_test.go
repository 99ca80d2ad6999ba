package supervise

import (
	"io"
	"strings"
	"testing"

	"github.com/lodis/lodis/internal/statusapi"
	"github.com/lodis/lodis/supervisor"
)

func TestParseFlags(t *testing.T) {
	c, err := ParseFlags(nil, io.Discard)
	if err != nil || c.Socket != statusapi.DefaultSocket || c.ProbeInterval != supervisor.DefaultProbeInterval || c.WakeProbeInterval != 0 {
		t.Fatalf("defaults: %+v %v", c, err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--bogus"}, "-bogus"},
		{[]string{"extra"}, `unexpected argument "extra"`},
		{[]string{"--probe-interval", "0"}, "-probe-interval"},
		{[]string{"--probe-timeout", "6s"}, "-probe-timeout"},
		{[]string{"--probe-failures", "0"}, "-probe-failures"},
		{[]string{"--wake-probe-interval", "5s"}, "a minute or more"},
		{[]string{"--events", "0"}, "-events"},
		{[]string{"--on-event", "/nonexistent"}, "no such file"},
	} {
		_, err := ParseFlags(c.args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("ParseFlags(%v) = %v, want one line with %q", c.args, err, c.want)
		}
	}
}
