package release

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestIntakeNoDrop(t *testing.T) {
	in := &Intake{Dir: t.TempDir()}
	d, err := in.Next(context.Background())
	if d != nil || err != nil {
		t.Fatalf("Next on an empty dir = %v, %v; want nil, nil", d, err)
	}
}

// TestIntakeWaitsForASlowWriter: a drop written in chunks, with pauses longer
// than the settle time, is not taken until its writer closes it.
func TestIntakeWaitsForASlowWriter(t *testing.T) {
	dir := t.TempDir()
	content, _ := os.ReadFile(bins.good)
	f, err := os.OpenFile(filepath.Join(dir, "lodis"), os.O_WRONLY|os.O_CREATE, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	closed := make(chan time.Time, 1)
	go func() {
		chunk := len(content)/6 + 1
		for off := 0; off < len(content); off += chunk {
			f.Write(content[off:min(off+chunk, len(content))])
			time.Sleep(300 * time.Millisecond) // > Settle: only the lease tells
		}
		closed <- time.Now()
		f.Close()
	}()
	in := &Intake{Dir: dir, Settle: 150 * time.Millisecond, Poll: 20 * time.Millisecond}
	d, err := in.Next(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	doneAt := <-closed
	if time.Now().Before(doneAt) {
		t.Fatal("taken before the writer finished")
	}
	if d.Info.Size() != int64(len(content)) {
		t.Fatalf("took %d of %d bytes", d.Info.Size(), len(content))
	}
	if err := CheckELF(d.Path, "amd64"); err != nil {
		t.Fatalf("the taken drop is not the complete binary: %v", err)
	}
	if in.Pending() {
		t.Fatal("incoming/lodis still there after it was taken")
	}
}

func TestIntakeTakesTheSignatureAlong(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "lodis"), []byte("bin"), 0o755)
	os.WriteFile(filepath.Join(dir, "lodis.sig"), []byte("sig\n"), 0o644)
	in := &Intake{Dir: dir, Settle: 50 * time.Millisecond, Poll: 10 * time.Millisecond}
	d, err := in.Next(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if string(d.Sig) != "sig\n" || d.SigPath == "" {
		t.Fatalf("drop signature = %q at %q", d.Sig, d.SigPath)
	}
	d.Remove()
	if des, _ := os.ReadDir(dir); len(des) != 0 {
		t.Fatalf("left in incoming after Remove: %v", des)
	}
}

func TestIntakeGivesUpOnAWriterThatNeverCloses(t *testing.T) {
	dir := t.TempDir()
	f, err := os.OpenFile(filepath.Join(dir, "lodis"), os.O_WRONLY|os.O_CREATE, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Write([]byte("partial"))
	in := &Intake{Dir: dir, Settle: 50 * time.Millisecond, Poll: 10 * time.Millisecond, MaxWait: 300 * time.Millisecond}
	d, err := in.Next(context.Background())
	var inv *Invalid
	if d == nil || !errors.As(err, &inv) || !errors.Is(err, ErrStillWriting) {
		t.Fatalf("Next = %v, %v; want the drop taken with a still-being-written rejection", d, err)
	}
}
