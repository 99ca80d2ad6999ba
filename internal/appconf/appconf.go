// Package appconf reads /etc/lodis/app.conf, the one place an operator
// describes the app lodis runs: its arguments, its health path and timeout,
// how it says it is ready, its extra environment, its state directory, its
// idle and stop timeouts. The file uses systemd's EnvironmentFile syntax
// (KEY=value lines, `#` and `;` comments, values optionally quoted). Every
// key is optional; a missing file is the defaults (`lodis serve`).
//
// A bad file is refused whole, with one line naming the file, the line and
// what is wrong: nothing of it is applied (see Effective).
package appconf

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/lodis/lodis/app"
)

// Path is where the app is described.
const Path = "/etc/lodis/app.conf"

// Ready says how the app tells it is ready to serve.
type Ready string

// Ready values.
const (
	// ReadyNotify: the app sends READY=1 (sd_notify); the unit is Type=notify.
	ReadyNotify Ready = "notify"
	// ReadyHealth: the app knows nothing of sd_notify; it is ready once its
	// health path answers 2xx. The unit is Type=exec.
	ReadyHealth Ready = "health"
)

// Defaults of the settings a file leaves out.
const (
	DefaultHealthPath    = app.DefaultHealthPath
	DefaultHealthTimeout = 2 * time.Second
	DefaultStopTimeout   = 15 * time.Second
)

// DefaultArgs are the arguments of the default app, `lodis serve`.
var DefaultArgs = []string{"serve", "--port", "%i"}

// Config is the app as app.conf describes it.
type Config struct {
	// Args follow the app's binary (APP_ARGS=, split like a command line;
	// default DefaultArgs). "%i" and "$LODIS_PORT" name the port.
	Args []string
	// HealthPath is the GET that must answer 2xx (HEALTH_PATH=, default
	// DefaultHealthPath).
	HealthPath string
	// HealthTimeout bounds one health check (HEALTH_TIMEOUT=, default
	// DefaultHealthTimeout).
	HealthTimeout time.Duration
	// Ready is how the app says it is ready (READY=, default ReadyNotify).
	Ready Ready
	// EnvFile, when not "", is an extra EnvironmentFile for the app
	// (ENV_FILE=, an absolute path).
	EnvFile string
	// StateDir gives the app a writable state directory, $STATE_DIRECTORY
	// (STATE_DIR=yes).
	StateDir bool
	// IdleTimeout, when positive, has the supervisor stop a worker whose
	// port had no established connection for this long (IDLE_TIMEOUT=;
	// default 0: the app exits by itself, or never).
	IdleTimeout time.Duration
	// StopTimeout is how long the app has to drain and exit after SIGTERM
	// (STOP_TIMEOUT=, default DefaultStopTimeout): the unit's
	// TimeoutStopSec=.
	StopTimeout time.Duration
	// Overlap has a roll-out start each port's new worker beside the old
	// one, sharing the socket, and stop the old one once the new one is
	// healthy (OVERLAP=, default yes); with no, the worker is restarted in
	// place and new connections wait for its start: for an app that cannot
	// run twice at once.
	Overlap bool
	// Network is what the app may reach besides the sockets systemd passes
	// it (NETWORK=, default NetworkNone): NetworkHost gives it the host's
	// network, for an app that calls out (a database, an API).
	Network Network
}

// Network says what network the app has besides its passed sockets.
type Network string

// Network values.
const (
	// NetworkNone: a network namespace of its own with nothing in it
	// (PrivateNetwork=yes): the passed sockets serve, new ones reach
	// nothing.
	NetworkNone Network = "none"
	// NetworkHost: the host's network (PrivateNetwork=no).
	NetworkHost Network = "host"
)

// Keys are the keys app.conf knows, in the order the documentation gives them.
var Keys = []string{"APP_ARGS", "HEALTH_PATH", "HEALTH_TIMEOUT", "READY", "ENV_FILE", "STATE_DIR", "IDLE_TIMEOUT", "STOP_TIMEOUT", "OVERLAP", "NETWORK"}

// Default is the configuration of a missing file.
func Default() Config {
	return Config{Args: append([]string(nil), DefaultArgs...), HealthPath: DefaultHealthPath,
		HealthTimeout: DefaultHealthTimeout, Ready: ReadyNotify, StopTimeout: DefaultStopTimeout, Overlap: true, Network: NetworkNone}
}

// Error is a bad line of a file: "FILE:LINE: what is wrong".
type Error struct {
	File string
	Line int // 0: the file as a whole
	Msg  string
}

func (e *Error) Error() string {
	if e.Line == 0 {
		return e.File + ": " + e.Msg
	}
	return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
}

// Load reads the file at path; a file that does not exist is Default().
// Errors are an *Error, one line.
func Load(path string) (Config, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return Default(), nil
	}
	if err != nil {
		return Config{}, &Error{File: path, Msg: "cannot read: " + errors.Unwrap(err).Error()}
	}
	defer f.Close()
	return Parse(f, path)
}

// Parse reads a file's content; name is the file's name in errors.
func Parse(r io.Reader, name string) (Config, error) {
	c := Default()
	seen := map[string]int{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 64<<10)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		bad := func(format string, a ...any) error {
			return &Error{File: name, Line: n, Msg: fmt.Sprintf(format, a...)}
		}
		key, raw, ok := strings.Cut(line, "=")
		key = strings.TrimSpace(key)
		if !ok || key == "" {
			return Config{}, bad("not KEY=value: %q", clip(line))
		}
		if prev := seen[key]; prev != 0 {
			return Config{}, bad("%s set again (first on line %d)", key, prev)
		}
		seen[key] = n
		val, err := unquote(strings.TrimSpace(raw))
		if err != nil {
			return Config{}, bad("%s: %v", key, err)
		}
		if err := c.set(key, val); err != nil {
			return Config{}, bad("%v", err)
		}
	}
	if err := sc.Err(); err != nil {
		return Config{}, &Error{File: name, Line: n + 1, Msg: err.Error()}
	}
	return c, nil
}

// set applies one KEY=value.
func (c *Config) set(key, val string) error {
	switch key {
	case "APP_ARGS":
		args, err := SplitArgs(val)
		if err != nil {
			return fmt.Errorf("APP_ARGS: %w", err)
		}
		c.Args = args
	case "HEALTH_PATH":
		if err := checkPath(val); err != nil {
			return fmt.Errorf("HEALTH_PATH %q: %w", clip(val), err)
		}
		c.HealthPath = val
	case "HEALTH_TIMEOUT":
		return setDuration(&c.HealthTimeout, key, val, time.Millisecond, 5*time.Minute)
	case "READY":
		switch Ready(val) {
		case ReadyNotify, ReadyHealth:
			c.Ready = Ready(val)
		default:
			return fmt.Errorf("READY=%q: want notify (the app sends READY=1) or health (ready once HEALTH_PATH answers)", clip(val))
		}
	case "ENV_FILE":
		if !strings.HasPrefix(val, "/") || strings.ContainsAny(val, " \t\n%$\\\"'") {
			return fmt.Errorf("ENV_FILE %q: want an absolute path without spaces, quotes, %% or $", clip(val))
		}
		c.EnvFile = val
	case "STATE_DIR":
		b, err := parseBool(val)
		if err != nil {
			return fmt.Errorf("STATE_DIR=%q: want yes or no", clip(val))
		}
		c.StateDir = b
	case "IDLE_TIMEOUT":
		if val == "0" || val == "" {
			c.IdleTimeout = 0
			return nil
		}
		return setDuration(&c.IdleTimeout, key, val, time.Second, 24*time.Hour)
	case "STOP_TIMEOUT":
		return setDuration(&c.StopTimeout, key, val, time.Second, time.Hour)
	case "NETWORK":
		switch Network(val) {
		case NetworkNone, NetworkHost:
			c.Network = Network(val)
		default:
			return fmt.Errorf("NETWORK=%q: want none (only the sockets systemd passes) or host (the host's network)", clip(val))
		}
	case "OVERLAP":
		b, err := parseBool(val)
		if err != nil {
			return fmt.Errorf("OVERLAP=%q: want yes (start the new worker beside the old one) or no (restart in place)", clip(val))
		}
		c.Overlap = b
	default:
		return fmt.Errorf("unknown key %s (known: %s)", clip(key), strings.Join(Keys, ", "))
	}
	return nil
}

// checkPath accepts an absolute URL path without spaces, controls, a query
// or a fragment.
func checkPath(p string) error {
	switch {
	case p == "":
		return errors.New("empty: give the path the app answers its health check on (leave the line out for " + DefaultHealthPath + ")")
	case p[0] != '/':
		return errors.New("want an absolute path such as /healthz")
	case strings.ContainsAny(p, "?#%\\\"'"):
		return errors.New("want a plain path: no query, fragment, %, quotes or backslashes")
	}
	for _, r := range p {
		if r <= ' ' || r == 0x7f {
			return errors.New("want a plain path: no spaces or control characters")
		}
	}
	return nil
}

// setDuration parses a Go duration ("3s", "1m30s") or whole seconds ("15")
// within [lo, hi].
func setDuration(d *time.Duration, key, val string, lo, hi time.Duration) error {
	v, err := parseSpan(val)
	if err != nil {
		return fmt.Errorf("%s=%q: want a duration such as 3s, 1m30s or 5min", key, clip(val))
	}
	if v < lo || v > hi {
		return fmt.Errorf("%s=%s: want %s to %s", key, val, lo, hi)
	}
	*d = v
	return nil
}

// spanUnits are the units of systemd.time(7) time spans.
var spanUnits = map[string]time.Duration{
	"us": time.Microsecond, "usec": time.Microsecond, "µs": time.Microsecond,
	"ms": time.Millisecond, "msec": time.Millisecond,
	"s": time.Second, "sec": time.Second, "second": time.Second, "seconds": time.Second,
	"m": time.Minute, "min": time.Minute, "minute": time.Minute, "minutes": time.Minute,
	"h": time.Hour, "hr": time.Hour, "hour": time.Hour, "hours": time.Hour,
	"d": 24 * time.Hour, "day": 24 * time.Hour, "days": 24 * time.Hour,
}

// parseSpan reads a duration as systemd does (systemd.time(7): "90",
// "5min", "1h 30min", "2s 500ms"; a bare number is seconds) or as Go
// writes one ("1m30s").
func parseSpan(val string) (time.Duration, error) {
	if v, err := time.ParseDuration(val); err == nil {
		return v, nil
	}
	rest := strings.TrimSpace(val)
	if rest == "" {
		return 0, errors.New("empty")
	}
	var total time.Duration
	for rest != "" {
		i := 0
		for i < len(rest) && (rest[i] >= '0' && rest[i] <= '9' || rest[i] == '.') {
			i++
		}
		n, err := strconv.ParseFloat(rest[:i], 64)
		if i == 0 || err != nil {
			return 0, fmt.Errorf("not a time span: %q", val)
		}
		rest = strings.TrimLeft(rest[i:], " ")
		j := 0
		for j < len(rest) && rest[j] != ' ' && (rest[j] < '0' || rest[j] > '9') {
			j++
		}
		unit := time.Second
		if j > 0 {
			u, ok := spanUnits[rest[:j]]
			if !ok {
				return 0, fmt.Errorf("unknown unit %q", rest[:j])
			}
			unit = u
		}
		total += time.Duration(n * float64(unit))
		rest = strings.TrimLeft(rest[j:], " ")
	}
	return total, nil
}

func parseBool(s string) (bool, error) {
	switch strings.ToLower(s) {
	case "yes", "true", "on", "1":
		return true, nil
	case "no", "false", "off", "0", "":
		return false, nil
	}
	return false, errors.New("not a boolean")
}

// unquote removes one pair of surrounding quotes, as systemd's
// EnvironmentFile parser does; inside double quotes \" and \\ are escapes.
func unquote(v string) (string, error) {
	if len(v) < 2 || (v[0] != '"' && v[0] != '\'') {
		if strings.HasPrefix(v, "\"") || strings.HasPrefix(v, "'") {
			return "", errors.New("unterminated quote")
		}
		return v, nil
	}
	q := v[0]
	if v[len(v)-1] != q {
		return "", errors.New("unterminated quote")
	}
	inner := v[1 : len(v)-1]
	if q == '\'' {
		return inner, nil
	}
	var b strings.Builder
	for i := 0; i < len(inner); i++ {
		if inner[i] == '\\' && i+1 < len(inner) {
			i++
		}
		b.WriteByte(inner[i])
	}
	return b.String(), nil
}

// clip shortens text for an error line.
func clip(s string) string {
	if len(s) > 60 {
		return s[:60] + "…"
	}
	return s
}

// Effective is the configuration in force: the file at path when it is
// good; when it is bad, the copy of the last good one kept at applied (see
// Generate), with bad the reason the file was refused; with neither,
// Default() and bad. source names where the configuration came from ("" for
// the defaults).
func Effective(path, applied string) (c Config, source string, bad error) {
	c, err := Load(path)
	if err == nil {
		if _, serr := os.Stat(path); serr != nil {
			return c, "", nil // no file: the defaults
		}
		return c, path, nil
	}
	if prev, perr := Load(applied); perr == nil {
		if _, serr := os.Stat(applied); serr == nil {
			return prev, applied, err
		}
	}
	return Default(), "", err
}
