package release

import (
	"encoding/base64"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestSignAndVerify(t *testing.T) {
	privPEM, pubPEM, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	priv, err := ParsePrivateKey(privPEM)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ParsePublicKey(pubPEM)
	if err != nil {
		t.Fatal(err)
	}
	_, otherPub, _ := GenerateKey()
	other, _ := ParsePublicKey(otherPub)
	bin := writeFile(t, "lodis", []byte("\x7fELF pretend binary"), 0o755)
	sig, err := SignFile(bin, priv)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := base64.StdEncoding.DecodeString(strings.TrimSpace(string(sig)))
	tampered := writeFile(t, "tampered", []byte("\x7fELF pretend binarY"), 0o755)

	for _, tc := range []struct {
		name string
		path string
		sig  []byte
		key  []byte
		want string
	}{
		{"base64 signature", bin, sig, pub, ""},
		{"raw 64-byte signature", bin, raw, pub, ""},
		{"missing signature", bin, nil, pub, "unsigned"},
		{"tampered binary", tampered, sig, pub, "bad signature"},
		{"another key", bin, sig, other, "bad signature"},
		{"malformed signature", bin, []byte("hello"), pub, "lodis.sig malformed"},
		{"empty signature file", bin, []byte{}, pub, "lodis.sig malformed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckSignature(tc.path, tc.sig, tc.key, "/etc/lodis/upgrade.pub")
			if tc.want == "" {
				if err != nil {
					t.Fatalf("CheckSignature = %v, want ok", err)
				}
				return
			}
			var inv *Invalid
			if !errors.As(err, &inv) || inv.Check != "signature" || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("CheckSignature = %v, want a signature rejection containing %q", err, tc.want)
			}
		})
	}
}

func TestParseKeysRejectsBadInput(t *testing.T) {
	rsaPub := "-----BEGIN RSA PUBLIC KEY-----\nMAo=\n-----END RSA PUBLIC KEY-----\n"
	for _, tc := range []struct{ name, in, want string }{
		{"garbage", "hello", "not an ed25519 public key"},
		{"short base64", base64.StdEncoding.EncodeToString([]byte("short")), "not an ed25519 public key"},
		{"wrong PEM type", rsaPub, `PEM block "RSA PUBLIC KEY"`},
	} {
		if _, err := ParsePublicKey([]byte(tc.in)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: ParsePublicKey = %v, want %q", tc.name, err, tc.want)
		}
	}
	if _, err := ParsePrivateKey([]byte("hello")); err == nil || !strings.Contains(err.Error(), "PRIVATE KEY") {
		t.Errorf("ParsePrivateKey(garbage) = %v", err)
	}
	if k, err := LoadPublicKey(filepath.Join(t.TempDir(), "absent.pub")); k != nil || err != nil {
		t.Errorf("LoadPublicKey(absent) = %v, %v; want no key and no error", k, err)
	}
	bad := writeFile(t, "bad.pub", []byte("hello"), 0o644)
	if _, err := LoadPublicKey(bad); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("LoadPublicKey(bad) = %v, want an error naming the file", err)
	}
}

// TestOpenSSLSignaturesVerify: keys and signatures made with the standard
// tool are accepted as documented.
func TestOpenSSLSignaturesVerify(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatal("openssl not found: install it (test/deps.sh does)")
	}
	dir := t.TempDir()
	key, pubf, sigf := filepath.Join(dir, "k.pem"), filepath.Join(dir, "k.pub"), filepath.Join(dir, "lodis.sig")
	bin := writeFile(t, "lodis", []byte("\x7fELF pretend binary"), 0o755)
	for _, args := range [][]string{
		{"genpkey", "-algorithm", "ed25519", "-out", key},
		{"pkey", "-in", key, "-pubout", "-out", pubf},
		{"pkeyutl", "-sign", "-rawin", "-inkey", key, "-in", bin, "-out", sigf},
	} {
		if out, err := exec.Command("openssl", args...).CombinedOutput(); err != nil {
			t.Fatalf("openssl %v: %v: %s", args, err, out)
		}
	}
	pub, err := LoadPublicKey(pubf)
	if err != nil {
		t.Fatal(err)
	}
	sig, _ := os.ReadFile(sigf)
	if err := CheckSignature(bin, sig, pub, pubf); err != nil {
		t.Fatalf("openssl-made signature: %v", err)
	}
	priv, _ := os.ReadFile(key)
	if _, err := ParsePrivateKey(priv); err != nil {
		t.Fatalf("openssl-made private key: %v", err)
	}
}
