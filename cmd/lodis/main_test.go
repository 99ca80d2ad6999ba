package main

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// The test binary doubles as the lodis binary when LODIS_RUN_MAIN is set, so
// bad-input cases run as real processes with their own environment and pid.
func TestMain(m *testing.M) {
	if os.Getenv("LODIS_RUN_MAIN") == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

func lodis(t *testing.T, env []string, args ...string) (int, string) {
	t.Helper()
	c := exec.Command(os.Args[0], args...)
	c.Env = append(append(os.Environ(), "LODIS_RUN_MAIN=1"), env...)
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	err := c.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, out.String()
}

func TestBadInputIsOneClearLine(t *testing.T) {
	cases := []struct {
		name string
		env  []string
		args []string
		code int
		want string
	}{
		{"unknown command", nil, []string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{"unknown flag", nil, []string{"serve", "--bogus"}, 2, "flag provided but not defined: -bogus"},
		{"bad flag value", nil, []string{"serve", "--idle-timeout", "soon"}, 2, `invalid value "soon"`},
		{"bad chaos rate", nil, []string{"serve", "--listen", "127.0.0.1:0", "--chaos-abort-rate", "2"}, 2, "want a probability from 0 to 1"},
		{"bad log level", nil, []string{"serve", "--listen", "127.0.0.1:0", "--log-level", "loud"}, 2, `bad log level "loud"`},
		{"bad listen", nil, []string{"serve", "--listen", "localhost"}, 1, `bad listen address "localhost"`},
		{"bad listen port", nil, []string{"serve", "--listen", "127.0.0.1:70000"}, 1, "port \"70000\" is not a number from 0 to 65535"},
		{"not activated", nil, []string{"serve"}, 1, "not socket-activated"},
		{"LISTEN_PID not ours", []string{"LISTEN_FDS=1", "LISTEN_PID=1"}, []string{"serve"}, 1, "LISTEN_PID=1 is not this process"},
		{"zero sockets", []string{"LISTEN_FDS=0"}, []string{"serve"}, 1, "LISTEN_FDS=0: systemd passed no socket"},
		{"garbage LISTEN_FDS", []string{"LISTEN_FDS=many"}, []string{"serve"}, 1, `bad LISTEN_FDS="many"`},
		{"version argument", nil, []string{"version", "extra"}, 2, `unexpected argument "extra"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out := lodis(t, tc.env, tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d; output %q", code, tc.code, out)
			}
			if !strings.Contains(out, tc.want) {
				t.Errorf("output %q lacks %q", out, tc.want)
			}
			if n := strings.Count(strings.TrimSpace(out), "\n"); n != 0 {
				t.Errorf("want one line, got %d:\n%s", n+1, out)
			}
			if strings.Contains(out, "panic") || strings.Contains(out, "goroutine") {
				t.Errorf("panic:\n%s", out)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	code, out := lodis(t, nil, "version")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	for _, want := range []string{"lodis ", "commit: ", "go: go1.", "sha256: "} {
		if !strings.Contains(out, want) {
			t.Errorf("version output lacks %q:\n%s", want, out)
		}
	}
}
