// Package isolation proves the worker's sandbox by attack: a probe program
// (./probe) runs as the worker, inside the real lodis@PORT.service unit of a
// real systemd, serves the socket it is handed, and on one HTTP request tries
// everything a worker must not be able to do — write anywhere on the
// filesystem, read other users' files, reach another worker's memory and
// /proc entries, open network sockets, load a module, change the clock,
// ptrace, mount, raise privileges, … — and answers with a JSON Report of
// every attempt. The tests (isolation_test.go) judge that report.
//
// This file holds the report format, shared by the probe and the tests, and
// the verdict rules.
package isolation

import (
	"fmt"
	"strings"
)

// Attempt is one thing the probe tried.
type Attempt struct {
	// Group is what the attempt attacks: filesystem, read, proc, peer,
	// network, kernel, privilege, namespace or device.
	Group string `json:"group"`
	// Name says what was tried, e.g. "create a file in /etc".
	Name string `json:"name"`
	// Done is true when the operation succeeded.
	Done bool `json:"done"`
	// Errno is the error's name (EPERM, EROFS, …) when the operation failed.
	Errno string `json:"errno,omitempty"`
	// Detail is free text: what succeeded, or the full error.
	Detail string `json:"detail,omitempty"`
	// Created lists files the attempt created (at most MaxCreated). A
	// write that succeeded is harmless only when none of them is visible
	// outside the worker's sandbox: the tests look for each on the host and
	// from the other worker.
	Created []string `json:"created,omitempty"`
	// Private marks an attempt whose success is expected and harmless when
	// what it created stays inside the sandbox (a private /tmp, say).
	Private bool `json:"private,omitempty"`
	// Info marks an attempt reported for the record, not judged.
	Info bool `json:"info,omitempty"`
}

// MaxCreated bounds Attempt.Created.
const MaxCreated = 200

// Contract is what the app contract needs, as the probe found it.
type Contract struct {
	ListenFamily string `json:"listen_family"` // AF_INET or AF_INET6 for fd 3
	ListenOK     bool   `json:"listen_ok"`     // fd 3 is a listening TCP socket
	Notified     bool   `json:"notified"`      // sd_notify READY=1 was sent
	NotifyError  string `json:"notify_error,omitempty"`
	ExeSHA256    string `json:"exe_sha256"` // of /proc/self/exe
	StateDir     string `json:"state_dir,omitempty"`
	StateDirOK   bool   `json:"state_dir_ok"` // a file could be written in $STATE_DIRECTORY
	Stdout       string `json:"stdout"`       // the line the probe wrote to stdout (the journal)
}

// Report is the probe's answer to GET /report.
type Report struct {
	PID      int       `json:"pid"`
	UID      int       `json:"uid"`
	GID      int       `json:"gid"`
	Port     string    `json:"port"`
	Contract Contract  `json:"contract"`
	Attempts []Attempt `json:"attempts"`
	Seconds  float64   `json:"seconds"` // how long the attempts took
}

// Verdict is the tests' judgement of one attempt.
type Verdict struct {
	Held bool   // the sandbox held: the attempt failed or stayed private
	Why  string // e.g. "EROFS", "private: not visible outside", "ALLOWED: …"
}

// Judge decides whether an attempt was stopped. visible reports, for a file
// the attempt created, where outside the sandbox it can be seen ("" when
// nowhere). allowed reports whether a created path is one the worker may
// write by contract (its state directory).
func Judge(a Attempt, visible func(path string) string, allowed func(path string) bool) Verdict {
	if a.Info {
		if a.Done {
			return Verdict{Held: true, Why: "info: " + a.Detail}
		}
		return Verdict{Held: true, Why: "info: " + a.Errno}
	}
	if !a.Done {
		return Verdict{Held: true, Why: a.Errno}
	}
	if len(a.Created) == 0 || !a.Private {
		return Verdict{Why: "ALLOWED: " + a.Detail}
	}
	var seen, kept []string
	for _, p := range a.Created {
		if allowed != nil && allowed(p) {
			kept = append(kept, p)
			continue
		}
		if where := visible(p); where != "" {
			seen = append(seen, fmt.Sprintf("%s (seen by %s)", p, where))
		}
	}
	switch {
	case len(seen) > 0:
		return Verdict{Why: "ALLOWED, visible outside: " + strings.Join(seen, ", ")}
	case len(kept) == len(a.Created):
		return Verdict{Held: true, Why: "state directory only"}
	case len(kept) > 0:
		return Verdict{Held: true, Why: "private or the state directory: not visible outside"}
	}
	return Verdict{Held: true, Why: "private: not visible outside"}
}

// HostMarkers are files the tests put in the host's side of the shared,
// world-writable places a worker gets a private copy of: the probe must
// find none of them. (The host's /run/lock may be seen read-only with the
// rest of /run; writing there is its own attempt.)
var HostMarkers = []string{"/tmp/lodis-isolation-marker", "/var/tmp/lodis-isolation-marker",
	"/dev/shm/lodis-isolation-marker"}

// Secret is a file the tests put where a worker must not read it, with the
// mode of the file and of its directory: /home's is world-readable, so only
// the sandbox stands between it and the worker.
type Secret struct {
	Path          string
	Mode, DirMode uint32
}

// Secrets are the files a worker must not read.
var Secrets = []Secret{
	{"/root/lodis-isolation-secret", 0o644, 0o700},
	{"/home/lodis-isolation/secret", 0o644, 0o755},
	{"/etc/lodis-isolation-secret", 0o600, 0o755},
}
