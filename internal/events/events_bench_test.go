package events

import (
	"io"
	"testing"

	"github.com/sirupsen/logrus"
)

// BenchmarkEvents measures the event ring: Emit (ring append, structured log
// line, one subscriber) and Since (a reader catching up on the last 100).
func BenchmarkEvents(b *testing.B) {
	log := logrus.New()
	log.SetOutput(io.Discard)
	ev := New(256, log)
	ev.Subscribe(func(Event) {})
	e := Event{Instance: "8080", From: "active/running", To: "failed/failed", Action: "reset-failed", Result: "done"}
	b.Run("Emit", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ev.Emit(e)
		}
	})
	b.Run("Since", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < 300; i++ {
			ev.Emit(e)
		}
		last := ev.Emit(e).Seq
		for b.Loop() {
			ev.Since(last - 100)
		}
	})
}
