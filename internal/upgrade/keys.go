package upgrade

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/lodis/lodis/release"
)

// Keygen is `lodis keygen`: it writes a new ed25519 key pair, DIR/upgrade.key
// (PEM PKCS #8, mode 0600: keep it where releases are built) and
// DIR/upgrade.pub (PEM, install it as /etc/lodis/upgrade.pub on the hosts).
// It never overwrites a key.
func Keygen(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("lodis keygen", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	dir := fs.String("dir", ".", "directory to write upgrade.key and upgrade.pub to")
	if code := parse(fs, args, stderr); code != nil {
		return *code
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

// Sign is `lodis sign -key KEY BINARY`: it writes BINARY's detached signature
// (one line of base64) to -o, by default BINARY.sig — drop it as
// incoming/lodis.sig before dropping the binary.
func Sign(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("lodis sign", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	keyPath := fs.String("key", "upgrade.key", "private key (PEM PKCS #8 ed25519)")
	out := fs.String("o", "", "signature file (default: BINARY.sig)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stderr)
			fmt.Fprintln(stderr, "usage: lodis sign -key KEY [-o SIG] BINARY")
			fs.PrintDefaults()
			return 0
		}
		fmt.Fprintf(stderr, "lodis sign: %v\n", err)
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "lodis sign: want exactly one BINARY to sign")
		return 2
	}
	bin := fs.Arg(0)
	if *out == "" {
		*out = bin + ".sig"
	}
	kb, err := os.ReadFile(*keyPath)
	if err != nil {
		fmt.Fprintf(stderr, "lodis sign: %v\n", err)
		return 1
	}
	key, err := release.ParsePrivateKey(kb)
	if err != nil {
		fmt.Fprintf(stderr, "lodis sign: %s: %v\n", *keyPath, err)
		return 1
	}
	sig, err := release.SignFile(bin, key)
	if err == nil {
		err = os.WriteFile(*out, sig, 0o644)
	}
	if err != nil {
		fmt.Fprintf(stderr, "lodis sign: %v\n", err)
		return 1
	}
	fmt.Fprintf(stderr, "wrote %s\n", *out)
	return 0
}
