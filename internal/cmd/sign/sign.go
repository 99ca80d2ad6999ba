// Package sign is `lodis sign`.
package sign

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/lodis/lodis/internal/release"
)

// Main is `lodis sign -key KEY BINARY`: it writes BINARY's detached signature
// (one line of base64) to -o, by default BINARY.sig — drop it as
// incoming/lodis.sig before dropping the binary.
func Main(args []string, stderr io.Writer) int {
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
