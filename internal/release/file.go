package release

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
)

// copyHashed copies r to a new file at path with mode perm, returns its
// SHA-256 and size, and syncs it.
func copyHashed(path string, r io.Reader, perm os.FileMode) (string, int64, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return "", 0, err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), r)
	if err == nil {
		err = f.Chmod(perm) // not narrowed by the umask
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return "", 0, fmt.Errorf("copy to %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}
