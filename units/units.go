// Package units holds lodis's systemd units — the unit files, tmpfiles.d and
// sysusers.d entries beside this file are the only copy of each, installed
// by `make install` (with @BINDIR@ substituted) and by both packages — and
// reads them, with go-systemd's unit parser, for the code that must act
// exactly as they say (the validation sandbox, tests, benchmarks).
package units

import (
	"bytes"
	"embed"
	"fmt"
	"slices"

	"github.com/coreos/go-systemd/v22/unit"
)

// Files are the unit files and their companions, by file name.
//
//go:embed *.service *.socket *.target *.path *.conf *.tmpfiles *.sysusers
var Files embed.FS

// Worker is the file that says what every worker runs and how it is
// confined: a drop-in of both worker templates (WorkerTemplates), installed
// as WorkerDropIn.
const Worker = "lodis-worker.conf"

// WorkerTemplates are the units Worker is a drop-in of.
var WorkerTemplates = []string{"lodis@.service", "lodis-alt@.service"}

// WorkerDropIn is Worker's name in each template's drop-in directory.
const WorkerDropIn = "10-worker.conf"

// Read returns the options of the named file of Files, in order.
func Read(name string) ([]*unit.UnitOption, error) {
	b, err := Files.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("unit %s: %w", name, err)
	}
	opts, err := unit.DeserializeOptions(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("unit %s: %w", name, err)
	}
	return opts, nil
}

// runKeys are the [Service] settings of the worker that say what to run and
// how systemd manages it; every other [Service] setting confines it.
var runKeys = []string{"Type", "NotifyAccess", "ExecStart", "Restart", "TimeoutStopSec", "WatchdogSec",
	"KillMode", "Environment", "SyslogIdentifier", "User", "NonBlocking"}

// IsSandbox reports whether a [Service] key of the worker confines it (as
// opposed to saying what runs and how systemd manages it).
func IsSandbox(key string) bool { return !slices.Contains(runKeys, key) }

// WorkerSandbox returns the worker's confinement: the [Service] settings of
// lodis-worker.conf that are sandboxing, in order, as "Key=Value" (the form
// `systemd-run -p` takes). User= goes with DynamicUser= and is left out: a
// transient unit gets a name of its own.
func WorkerSandbox() ([]string, error) {
	opts, err := Read(Worker)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, o := range opts {
		if o.Section == "Service" && IsSandbox(o.Name) {
			out = append(out, o.Name+"="+o.Value)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("unit %s: no sandboxing in [Service]", Worker)
	}
	return out, nil
}
