package systemd

import (
	"slices"
	"strconv"
	"strings"
)

// Unit names and patterns of lodis's own units. Every package names lodis
// units through these; none builds "lodis@" strings of its own.
const (
	// SupervisorUnit runs `lodis supervise`.
	SupervisorUnit = "lodis-supervisor.service"
	// WorkerPattern and SocketPattern match every port's worker and socket
	// (ListUnitsByPatterns syntax).
	WorkerPattern = "lodis@*.service"
	SocketPattern = "lodis@*.socket"
	// AltPattern matches every port's alternate worker.
	AltPattern = "lodis-alt@*.service"
)

// SocketUnit names the listening socket of port, e.g. "lodis@8080.socket".
func SocketUnit(port string) string { return "lodis@" + port + ".socket" }

// ServiceUnit names the worker of port, e.g. "lodis@8080.service".
func ServiceUnit(port string) string { return "lodis@" + port + ".service" }

// AltUnit names the alternate worker of port, e.g. "lodis-alt@8080.service":
// a second worker that shares the port's socket (Sockets=) while a roll-out
// replaces the worker, and serves on until the next one.
func AltUnit(port string) string { return "lodis-alt@" + port + ".service" }

// ParseUnit splits a lodis instance unit name into its port and type
// ("socket", "service", or "alt" for the alternate worker); ok is false for
// any other unit, and for an instance that is not a port number from 1 to
// 65535.
func ParseUnit(name string) (port, typ string, ok bool) {
	if rest, found := strings.CutPrefix(name, "lodis-alt@"); found {
		port, ok := strings.CutSuffix(rest, ".service")
		if !ok || !ValidPort(port) {
			return "", "", false
		}
		return port, "alt", true
	}
	rest, found := strings.CutPrefix(name, "lodis@")
	if !found {
		return "", "", false
	}
	port, typ, found = strings.Cut(rest, ".")
	if !found || (typ != "socket" && typ != "service") || !ValidPort(port) {
		return "", "", false
	}
	return port, typ, true
}

// ValidPort reports whether p is a port number from 1 to 65535 written
// without a leading zero: the only instance names lodis units take.
func ValidPort(p string) bool {
	if p == "" || len(p) > 5 || p[0] == '0' {
		return false
	}
	n := 0
	for _, c := range p {
		if c < '0' || c > '9' {
			return false
		}
		n = n*10 + int(c-'0')
	}
	return n >= 1 && n <= 65535
}

// PortOf returns the instance (port) of a lodis@ or lodis-alt@ unit name
// ("lodis@8080.service" → "8080"); for any other name, the name without its
// suffix.
func PortOf(unit string) string {
	s := strings.TrimPrefix(strings.TrimPrefix(unit, "lodis-alt@"), "lodis@")
	if i := strings.LastIndexByte(s, '.'); i >= 0 {
		s = s[:i]
	}
	return s
}

// SortUnits sorts lodis@ unit names by port number.
func SortUnits(units []string) {
	slices.SortFunc(units, func(a, b string) int {
		pa, ea := strconv.Atoi(PortOf(a))
		pb, eb := strconv.Atoi(PortOf(b))
		if ea == nil && eb == nil && pa != pb {
			return pa - pb
		}
		return strings.Compare(a, b)
	})
}

// PortLess orders port strings numerically ("99" before "100").
func PortLess(a, b string) bool {
	if len(a) != len(b) {
		return len(a) < len(b)
	}
	return a < b
}
