package cli

import (
	"bytes"
	"flag"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	newFS := func() (*flag.FlagSet, *int) {
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		return fs, fs.Int("n", 1, "a number")
	}
	fs, n := newFS()
	if err := Parse(fs, []string{"-n", "3"}, "x [-n N]", nil); err != nil || *n != 3 {
		t.Fatalf("good flags: %v, n=%d", err, *n)
	}
	var out bytes.Buffer
	fs, _ = newFS()
	err := Parse(fs, []string{"-h"}, "x [-n N]", &out)
	if Exit("x", err, &out) != 0 || !strings.Contains(out.String(), "usage: x [-n N]") || !strings.Contains(out.String(), "a number") {
		t.Fatalf("help: %v %q", err, out.String())
	}
	for _, args := range [][]string{{"-bogus"}, {"-n", "many"}, {"stray"}} {
		out.Reset()
		fs, _ = newFS()
		err := Parse(fs, args, "x", &out)
		if code := Exit("x", err, &out); code != 2 || strings.Count(out.String(), "\n") != 1 || !strings.HasPrefix(out.String(), "x: ") {
			t.Errorf("%q: code %d, output %q", args, code, out.String())
		}
	}
}

func TestClean(t *testing.T) {
	for in, want := range map[string]string{
		"v1.2":                     "v1.2",
		"\x1b[31mred\x1b[0m":       " [31mred [0m",
		"line\nbreak\rreturn\ttab": "line break return tab",
		"\u009b2J":                 " 2J",
		strings.Repeat("x", 250):   strings.Repeat("x", 200) + "…",
		"bad \xff utf8":            "bad   utf8",
	} {
		if got := Clean(in, 0); got != want {
			t.Errorf("Clean(%q) = %q, want %q", in, got, want)
		}
	}
}
