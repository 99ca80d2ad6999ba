package serve

import (
	"testing"
	"time"
)

func TestParseFlags(t *testing.T) {
	c, err := ParseFlags([]string{"--idle-timeout", "0", "--port", "9000"}, nil)
	if err != nil || c.IdleTimeout != 0 || c.Port != "9000" || c.DrainTimeout != 10*time.Second || c.MaxConns != 4096 {
		t.Fatalf("ParseFlags = %+v, %v", c, err)
	}
	for _, bad := range [][]string{{"--idle-timeout", "-1s"}, {"--drain-timeout", "0"}, {"--chaos-abort-rate", "-0.1"}, {"--max-conns", "0"}, {"extra"}} {
		if _, err := ParseFlags(bad, nil); err == nil {
			t.Errorf("ParseFlags(%q) accepted", bad)
		}
	}
}
