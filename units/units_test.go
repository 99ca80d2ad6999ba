package units

import (
	"slices"
	"testing"
)

func TestWorkerSandbox(t *testing.T) {
	sb, err := WorkerSandbox()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"DynamicUser=yes", "ProtectSystem=strict", "RootDirectory=/run/lodis-root", "PrivateNetwork=yes", "CapabilityBoundingSet="} {
		if !slices.Contains(sb, want) {
			t.Errorf("sandbox lacks %q: %v", want, sb)
		}
	}
	for _, s := range sb {
		for _, run := range []string{"ExecStart=", "Type=", "User="} {
			if len(s) >= len(run) && s[:len(run)] == run {
				t.Errorf("sandbox has %q, which says what runs", s)
			}
		}
	}
	if len(sb) < 20 {
		t.Fatalf("only %d sandbox settings: parse error?", len(sb))
	}
}

func TestEveryFileParses(t *testing.T) {
	des, err := Files.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, de := range des {
		switch name := de.Name(); {
		case len(name) > 9 && (name[len(name)-9:] == ".tmpfiles" || name[len(name)-9:] == ".sysusers"):
		case name == Worker:
			if _, err := Read(name); err != nil {
				t.Error(err)
			}
		default:
			if _, err := Read(name); err != nil {
				t.Error(err)
			}
			n++
		}
	}
	if n < 5 {
		t.Fatalf("only %d unit files embedded", n)
	}
}
