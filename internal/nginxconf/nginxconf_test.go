package nginxconf

import (
	"strings"
	"testing"
)

func TestParsePorts(t *testing.T) {
	got, err := ParsePorts("8082, 8080-8081,8080")
	if err != nil || len(got) != 3 || got[0] != 8080 || got[2] != 8082 {
		t.Errorf("ParsePorts = %v, %v", got, err)
	}
	for _, bad := range []string{"", "x", "0", "8080-8070", "70000", "1-5000", "8080,,8081"} {
		if _, err := ParsePorts(bad); err == nil || !strings.Contains(err.Error(), "bad port list") {
			t.Errorf("ParsePorts(%q) = %v, want a bad port list error", bad, err)
		}
	}
}
