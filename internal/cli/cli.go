// Package cli holds what every lodis subcommand does the same way with its
// flags: errors in one line, usage on -h, no stray arguments.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// Parse parses args with fs (which should be flag.ContinueOnError). On -h or
// --help it prints usage and the flags' defaults to stderr and returns
// flag.ErrHelp. A bad flag, or an argument left over after the flags, is
// returned as a one-line error. fs's own output is discarded either way.
func Parse(fs *flag.FlagSet, args []string, usage string, stderr io.Writer) error {
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stderr)
			fmt.Fprintln(stderr, "usage:", usage)
			fs.PrintDefaults()
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return nil
}

// Exit prints "name: err" on stderr and returns the exit code for a flag
// error: 0 after -h (usage was printed by Parse), 2 otherwise.
func Exit(name string, err error, stderr io.Writer) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintf(stderr, "%s: %v\n", name, err)
	return 2
}

// Dash returns s, or "-" when s is empty: the placeholder of a table cell.
func Dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// OneLine puts s on one line, for a table cell or a log summary, cleaned
// as Clean does (up to 1000 bytes).
func OneLine(s string) string { return Clean(s, 1000) }

// Clean makes text that came from elsewhere (a worker's health answer, a
// reason recorded from an app's output) safe for a terminal or an
// environment variable: control characters, escape sequences included,
// become spaces, and it is cut to max bytes (0: 200) on a character
// boundary.
func Clean(s string, max int) string {
	if max <= 0 {
		max = 200
	}
	var b strings.Builder
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == utf8.RuneError {
			r = ' '
		}
		if b.Len()+utf8.RuneLen(r) > max {
			b.WriteString("…")
			break
		}
		b.WriteRune(r)
	}
	return b.String()
}
