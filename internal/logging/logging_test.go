package logging

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
)

func TestBadLevelAndFormat(t *testing.T) {
	if _, err := New(os.Stderr, "loud", "text"); err == nil || !strings.Contains(err.Error(), `bad log level "loud"`) {
		t.Fatalf("bad level: %v", err)
	}
	if _, err := New(os.Stderr, "info", "xml"); err == nil || !strings.Contains(err.Error(), `bad log format "xml"`) {
		t.Fatalf("bad format: %v", err)
	}
}

func TestTimestampsUnlessJournal(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "log")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	t.Setenv("JOURNAL_STREAM", "")
	l, _ := New(f, "info", "auto")
	l.Info("one")
	t.Setenv("JOURNAL_STREAM", fmt.Sprintf("%d:%d", st.Dev, st.Ino))
	l, _ = New(f, "info", "auto")
	l.WithField("port", 8080).Info("two")
	b, _ := os.ReadFile(f.Name())
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "time=") || strings.Contains(lines[1], "time=") || !strings.Contains(lines[1], "port=8080") {
		t.Fatalf("want a timestamp outside journald only:\n%s", b)
	}
	var buf bytes.Buffer
	l, _ = New(&buf, "info", "json")
	l.Info("three")
	if !strings.HasPrefix(buf.String(), "{") {
		t.Fatalf("json format: %s", buf.String())
	}
}

func TestSlog(t *testing.T) {
	var b bytes.Buffer
	l, err := New(&b, "info", "text")
	if err != nil {
		t.Fatal(err)
	}
	s := Slog(l.WithField("port", "8080")).With("pid", 7)
	s.Debug("hidden")
	s.WithGroup("drain").Warn("draining", "open_conns", 3)
	out := b.String()
	for _, w := range []string{"level=warning", "msg=draining", "port=8080", "pid=7", "drain.open_conns=3"} {
		if !strings.Contains(out, w) {
			t.Errorf("log lacks %q: %s", w, out)
		}
	}
	if strings.Contains(out, "hidden") {
		t.Errorf("a debug record passed an info logger: %s", out)
	}
}
