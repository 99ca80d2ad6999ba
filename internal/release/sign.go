package release

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Signatures are plain Ed25519 (RFC 8032) over the whole binary, in formats
// OpenSSL reads and writes, so either lodis or openssl can make them:
//
//	private key  PEM "PRIVATE KEY" (PKCS #8)      lodis keygen, or openssl genpkey -algorithm ed25519
//	public key   PEM "PUBLIC KEY" (SubjectPublicKeyInfo), or one line of base64 of the 32 raw bytes
//	                                             lodis keygen, or openssl pkey -in KEY -pubout
//	signature    the 64 raw bytes, or one line of their base64
//	                                             lodis sign, or openssl pkeyutl -sign -rawin -inkey KEY -in lodis -out lodis.sig
//
// DefaultPublicKey is where `lodis upgrade` looks for the key: when the file
// exists, every drop must come with a valid incoming/lodis.sig.
const DefaultPublicKey = "/etc/lodis/upgrade.pub"

// GenerateKey returns a new key pair encoded as PEM (private PKCS #8, public
// SubjectPublicKeyInfo).
func GenerateKey() (privPEM, pubPEM []byte, err error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	p8, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, nil, fmt.Errorf("encode private key: %w", err)
	}
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, nil, fmt.Errorf("encode public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}),
		pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: spki}), nil
}

// ParsePrivateKey reads a PEM PKCS #8 Ed25519 private key.
func ParsePrivateKey(b []byte) (ed25519.PrivateKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, errors.New(`not a PEM "PRIVATE KEY" (PKCS #8) file`)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("bad private key: %w", err)
	}
	ek, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("private key is %T, want ed25519", k)
	}
	return ek, nil
}

// ParsePublicKey reads an Ed25519 public key: PEM "PUBLIC KEY", or base64 of
// the 32 raw bytes on one line.
func ParsePublicKey(b []byte) (ed25519.PublicKey, error) {
	if blk, _ := pem.Decode(b); blk != nil {
		if blk.Type != "PUBLIC KEY" {
			return nil, fmt.Errorf("PEM block %q, want \"PUBLIC KEY\"", blk.Type)
		}
		k, err := x509.ParsePKIXPublicKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("bad public key: %w", err)
		}
		ek, ok := k.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("public key is %T, want ed25519", k)
		}
		return ek, nil
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(raw) != ed25519.PublicKeySize {
		return nil, errors.New(`not an ed25519 public key: want PEM "PUBLIC KEY" or base64 of 32 bytes`)
	}
	return ed25519.PublicKey(raw), nil
}

// LoadPublicKey reads the key file at path. It returns (nil, nil) when the
// file does not exist: no key is configured.
func LoadPublicKey(path string) (ed25519.PublicKey, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	k, err := ParsePublicKey(b)
	if err != nil {
		return nil, fmt.Errorf("public key %s: %w", path, err)
	}
	return k, nil
}

// SignFile returns the base64 signature line of the file at path.
func SignFile(path string, key ed25519.PrivateKey) ([]byte, error) {
	msg, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	sig := ed25519.Sign(key, msg)
	return []byte(base64.StdEncoding.EncodeToString(sig) + "\n"), nil
}

// decodeSignature accepts the 64 raw bytes or one line of their base64.
func decodeSignature(b []byte) ([]byte, error) {
	if len(b) == ed25519.SignatureSize {
		return b, nil
	}
	raw, err := base64.StdEncoding.DecodeString(string(bytes.TrimSpace(b)))
	if err != nil || len(raw) != ed25519.SignatureSize {
		return nil, fmt.Errorf("malformed (%d bytes): want 64 raw bytes or their base64", len(b))
	}
	return raw, nil
}

// CheckSignature verifies sig over the file at path with key. A nil sig means
// no signature came with the drop. keyName names the key in the reason.
func CheckSignature(path string, sig []byte, key ed25519.PublicKey, keyName string) error {
	if keyName == "" {
		keyName = "the configured public key"
	}
	if sig == nil {
		return invalid("signature", "unsigned: %s is configured and no lodis.sig came with the drop", keyName)
	}
	raw, err := decodeSignature(sig)
	if err != nil {
		return invalid("signature", "lodis.sig %v", err)
	}
	msg, err := os.ReadFile(path)
	if err != nil {
		return &Invalid{Check: "signature", Err: err}
	}
	if !ed25519.Verify(key, msg, raw) {
		return invalid("signature", "bad signature: lodis.sig does not verify with %s", keyName)
	}
	return nil
}
