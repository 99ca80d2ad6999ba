package appconf

import (
	"errors"
	"strings"
)

// SplitArgs splits a command line the way systemd splits ExecStart=: words
// separated by blanks, "double" and 'single' quotes group words, a backslash
// escapes the next character. An empty line is no arguments.
func SplitArgs(s string) ([]string, error) {
	var out []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t':
			if inWord {
				out = append(out, cur.String())
				cur.Reset()
				inWord = false
			}
		case c == '\\':
			if i+1 == len(s) {
				return nil, errors.New("trailing backslash")
			}
			i++
			cur.WriteByte(s[i])
			inWord = true
		case c == '"' || c == '\'':
			j := i + 1
			for ; j < len(s) && s[j] != c; j++ {
				if c == '"' && s[j] == '\\' && j+1 < len(s) {
					j++
				}
				cur.WriteByte(s[j])
			}
			if j == len(s) {
				return nil, errors.New("unterminated quote")
			}
			i = j
			inWord = true
		case c < ' ' || c == 0x7f:
			return nil, errors.New("control character in the arguments")
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		out = append(out, cur.String())
	}
	return out, nil
}

// quoteArg writes one argument for an ExecStart= line: double-quoted, with
// backslashes and quotes escaped. Specifiers (%i) and $VARIABLES are left
// for systemd to expand, so a literal % must be written %% in APP_ARGS.
func quoteArg(a string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(a); i++ {
		if a[i] == '"' || a[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(a[i])
	}
	b.WriteByte('"')
	return b.String()
}
