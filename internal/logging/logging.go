// Package logging sets up lodis's logrus logger: structured fields, level by flag,
// and no timestamps when journald captures the output (journald stamps each line).
package logging

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/sirupsen/logrus"
)

// New returns a logger writing to w at the named level ("debug", "info", "warn",
// "error"). Format is "text", "json" or "auto" (text; without timestamps when
// JOURNAL_STREAM says w is connected to journald).
func New(w io.Writer, level, format string) (*logrus.Logger, error) {
	lvl, err := logrus.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("bad log level %q: want debug, info, warn or error", level)
	}
	l := logrus.New()
	l.SetOutput(w)
	l.SetLevel(lvl)
	switch format {
	case "json":
		l.SetFormatter(&logrus.JSONFormatter{DisableTimestamp: underJournal(w)})
	case "text", "auto", "":
		l.SetFormatter(&logrus.TextFormatter{DisableTimestamp: underJournal(w), FullTimestamp: true, DisableColors: true})
	default:
		return nil, fmt.Errorf("bad log format %q: want auto, text or json", format)
	}
	return l, nil
}

// underJournal reports whether w is the stream journald handed this process:
// JOURNAL_STREAM holds "DEV:INODE" of that stream (systemd.exec(5)).
func underJournal(w io.Writer) bool {
	js := os.Getenv("JOURNAL_STREAM")
	f, ok := w.(*os.File)
	if js == "" || !ok {
		return false
	}
	dev, ino, ok := strings.Cut(js, ":")
	if !ok {
		return false
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return strconv.FormatUint(st.Dev, 10) == dev && strconv.FormatUint(st.Ino, 10) == ino
}
