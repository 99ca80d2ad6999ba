package nginxconfig

import (
	"bytes"
	"strings"
	"testing"
)

func TestRender(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"--ports", "8080-8082", "--listen", "127.0.0.1:8000", "--upstream", "front"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	conf := out.String()
	for _, w := range []string{"upstream front {", "server 127.0.0.1:8080 max_fails=0;", "server 127.0.0.1:8082 max_fails=0;",
		"keepalive 32;", "listen 127.0.0.1:8000;", "proxy_pass http://front;", "proxy_next_upstream error timeout http_502 http_503;",
		"proxy_http_version 1.1;", `proxy_set_header Connection "";`, "proxy_next_upstream_tries 3;"} {
		if !strings.Contains(conf, w) {
			t.Errorf("config lacks %q:\n%s", w, conf)
		}
	}
	if strings.Count(conf, "{") != strings.Count(conf, "}") {
		t.Errorf("unbalanced braces:\n%s", conf)
	}
}

func TestBadFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--bogus"}, 2, "-bogus"},
		{[]string{"--ports", "x"}, 1, "bad port list"},
		{[]string{"--ports", "80", "--upstream", "a b"}, 2, "bad --upstream"},
		{[]string{"--ports", "80", "--listen", "80; evil"}, 2, "bad --listen"},
		{[]string{"--ports", "80", "--host", "example.com"}, 2, "bad --host"},
		{[]string{"--bus", "unix:path=/nonexistent/bus"}, 1, "pass --ports"},
	} {
		var out, errb bytes.Buffer
		code := run(c.args, &out, &errb)
		msg := strings.TrimRight(errb.String(), "\n")
		if code != c.code || !strings.Contains(msg, c.want) || strings.Contains(msg, "\n") || out.Len() != 0 {
			t.Errorf("%v: exit %d, stderr %q, stdout %d bytes; want exit %d, one line with %q, no output", c.args, code, msg, out.Len(), c.code, c.want)
		}
	}
}
