package probeallow

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestAddress(t *testing.T) {
	for in, want := range map[string]string{
		"8080": "", "[::]:8080": "", "0.0.0.0:8080": "", "127.0.0.1:8080": "", "127.0.0.2:8080": "", "[::1]:8080": "",
		"/run/x.sock": "", "@abstract": "", "vsock:2:8080": "",
		"10.0.0.2:8080": "10.0.0.2", "10.0.0.2:%i": "10.0.0.2", "[2001:db8::1]:443": "2001:db8::1",
		"[fe80::1%eth0]:80": "fe80::1", " 192.168.1.5:80 ": "192.168.1.5",
	} {
		got, ok := Address(in)
		if got != want || ok != (want != "") {
			t.Errorf("Address(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}

// TestAddressesAndWrite: every ListenStream= of lodis@ socket files and
// drop-ins, in every directory, and nothing of other units.
func TestAddressesAndWrite(t *testing.T) {
	etc, lib := t.TempDir(), t.TempDir()
	write := func(dir, name, text string) {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(etc, "lodis@8080.socket.d/listen.conf", "[Socket]\nListenStream=\nListenStream=10.0.0.2:8080\nListenStream=[::1]:8080\n")
	write(etc, "lodis@.socket.d/all.conf", "[Socket]\nListenStream=[2001:db8::1]:%i\n")
	write(lib, "lodis@9090.socket", "[Socket]\nListenStream=10.0.0.3:9090\nListenStream=10.0.0.2:9091\n")
	write(lib, "lodis@9090.socket.d/x.conf", "[Unit]\nDescription=ListenStream=10.9.9.9:1\n")
	write(etc, "other.socket.d/x.conf", "[Socket]\nListenStream=10.0.0.9:80\n")
	write(etc, "lodis@7070.socket.d/comment.conf", "# ListenStream=10.0.0.8:7070\n[Socket]\n")
	got, err := Addresses([]string{etc, lib, filepath.Join(etc, "missing")})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"10.0.0.2", "10.0.0.3", "2001:db8::1"}; !slices.Equal(got, want) {
		t.Fatalf("Addresses = %v, want %v", got, want)
	}
	out := t.TempDir()
	if err := Write(out, got); err != nil {
		t.Fatal(err)
	}
	for _, u := range Units {
		b, err := os.ReadFile(filepath.Join(out, u+".d", DropInName))
		if err != nil || !strings.Contains(string(b), "\nIPAddressAllow=10.0.0.2 10.0.0.3 2001:db8::1\n") {
			t.Errorf("%s drop-in: %q, %v", u, b, err)
		}
	}
	empty := t.TempDir()
	if err := Write(empty, nil); err != nil {
		t.Fatal(err)
	}
	if des, _ := os.ReadDir(empty); len(des) != 0 {
		t.Errorf("no address, but Write made %v", des)
	}
}
