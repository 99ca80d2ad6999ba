package logging

import (
	"context"
	"log/slog"

	"github.com/sirupsen/logrus"
)

// Slog returns an slog.Logger whose records go to l, for the libraries that
// log through log/slog (package activation): the record's attributes become
// logrus fields, its level the logrus level.
func Slog(l logrus.FieldLogger) *slog.Logger { return slog.New(&handler{l: l}) }

// handler is an slog.Handler writing to a logrus logger.
type handler struct {
	l      logrus.FieldLogger
	prefix string // group prefix for attribute keys, "" or "g."
}

func (h *handler) Enabled(_ context.Context, lv slog.Level) bool {
	if lg, ok := h.l.(interface{ IsLevelEnabled(logrus.Level) bool }); ok {
		return lg.IsLevelEnabled(level(lv))
	}
	if e, ok := h.l.(*logrus.Entry); ok {
		return e.Logger.IsLevelEnabled(level(lv))
	}
	return true
}

func (h *handler) Handle(_ context.Context, r slog.Record) error {
	f := logrus.Fields{}
	r.Attrs(func(a slog.Attr) bool { h.add(f, h.prefix, a); return true })
	h.l.WithFields(f).Log(level(r.Level), r.Message)
	return nil
}

func (h *handler) WithAttrs(as []slog.Attr) slog.Handler {
	f := logrus.Fields{}
	for _, a := range as {
		h.add(f, h.prefix, a)
	}
	return &handler{l: h.l.WithFields(f), prefix: h.prefix}
}

func (h *handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return &handler{l: h.l, prefix: h.prefix + name + "."}
}

func (h *handler) add(f logrus.Fields, prefix string, a slog.Attr) {
	v := a.Value.Resolve()
	if v.Kind() == slog.KindGroup {
		for _, g := range v.Group() {
			h.add(f, prefix+a.Key+".", g)
		}
		return
	}
	if a.Key != "" {
		f[prefix+a.Key] = v.Any()
	}
}

// level maps an slog level to the logrus one.
func level(lv slog.Level) logrus.Level {
	switch {
	case lv >= slog.LevelError:
		return logrus.ErrorLevel
	case lv >= slog.LevelWarn:
		return logrus.WarnLevel
	case lv >= slog.LevelInfo:
		return logrus.InfoLevel
	}
	return logrus.DebugLevel
}
