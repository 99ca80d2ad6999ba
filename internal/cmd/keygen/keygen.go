// Package keygen is `lodis keygen`.
package keygen

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/lodis/lodis/internal/cli"
	"github.com/lodis/lodis/internal/release"
)

// Main is `lodis keygen`: it writes a new ed25519 key pair, DIR/upgrade.key
// (PEM PKCS #8, mode 0600: keep it where releases are built) and
// DIR/upgrade.pub (PEM, install it as /etc/lodis/upgrade.pub on the hosts).
// It never overwrites a key.
func Main(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("lodis keygen", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	dir := fs.String("dir", ".", "directory to write upgrade.key and upgrade.pub to")
	if err := cli.Parse(fs, args, "lodis keygen [-dir DIR]", stderr); err != nil {
		return cli.Exit("lodis keygen", err, stderr)
	}
	priv, pub, err := release.GenerateKey()
	if err == nil {
		err = writeNew(filepath.Join(*dir, "upgrade.key"), priv, 0o600)
	}
	if err == nil {
		err = writeNew(filepath.Join(*dir, "upgrade.pub"), pub, 0o644)
	}
	if err != nil {
		fmt.Fprintf(stderr, "lodis keygen: %v\n", err)
		return 1
	}
	fmt.Fprintf(stderr, "wrote %s and %s\n", filepath.Join(*dir, "upgrade.key"), filepath.Join(*dir, "upgrade.pub"))
	return 0
}

func writeNew(path string, b []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("%s exists: not overwriting a key", path)
	}
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
