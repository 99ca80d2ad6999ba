package appconf

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Applied is where the generator keeps a copy of the last good app.conf it
// applied, to fall back on when the file turns bad (see Effective).
const Applied = "/var/lib/lodis/app.conf.applied"

// Generate is the systemd generator (lodis-generator, run at boot and at
// every daemon-reload): it writes the drop-in of the configuration in force
// (Effective) for each of Workers into dir, the generator's output
// directory, naming bindir's lodis as the launcher. With no file it writes
// nothing: the units' own defaults run `lodis serve`.
//
// A bad file changes nothing: the last good one applied is written again,
// and bad says why the file was refused (one line, for the journal). When
// no good file was ever applied, nothing is written and the defaults stand.
// err is a failure to write the drop-ins.
func Generate(path, applied, dir, bindir string) (bad, err error) {
	c, src, bad := Effective(path, applied)
	if src == "" {
		if bad == nil {
			os.Remove(applied) // the file is gone: a later bad one must not bring this one back
		}
		return bad, nil
	}
	text := c.DropIn(bindir, src)
	for _, w := range Workers {
		d := filepath.Join(dir, w+".d")
		if err := os.MkdirAll(d, 0o755); err != nil {
			return bad, fmt.Errorf("generator: %w", err)
		}
		if err := os.WriteFile(filepath.Join(d, DropInName), []byte(text), 0o644); err != nil {
			return bad, fmt.Errorf("generator: %w", err)
		}
	}
	if src == path {
		// Best effort: at boot the file system may still be read-only.
		if b, rerr := os.ReadFile(path); rerr == nil {
			writeAtomic(applied, b)
		}
	}
	return bad, nil
}

// writeAtomic replaces path with data through a temporary file beside it.
func writeAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return errors.Join(err, os.Remove(tmp))
	}
	return nil
}
