package plot

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	gonum "gonum.org/v1/plot"

	"github.com/lodis/lodis/internal/load"
)

// synthetic returns the series of a 10 s run at 100 ms buckets with a steady
// latency and, from 4 s to 4.5 s, a p99 of spike with failed requests in
// each bucket.
func synthetic(name string, base, spike time.Duration, failed int) Series {
	s := Series{Name: name, Interval: 100 * time.Millisecond}
	for i := range 100 {
		b := load.Bucket{Start: time.Duration(i) * s.Interval, Sent: 200, OK: 200, P50: base, P99: 3 * base}
		if i >= 40 && i < 45 {
			b.OK, b.Failed, b.P99 = 200-failed, failed, spike
		}
		if i == 42 && failed > 0 {
			b.OK, b.Failed = 0, 200 // nothing answered: no latency point
		}
		s.Timeline = append(s.Timeline, b)
	}
	return s
}

func chart() Chart {
	return Chart{
		Title: "upgrade under load",
		Series: []Series{
			synthetic("lodis", 200*time.Microsecond, 5*time.Millisecond, 0),
			synthetic("nginx", 150*time.Microsecond, 800*time.Millisecond, 13),
			synthetic("systemctl restart", 180*time.Microsecond, 2*time.Second, 50),
		},
		Marks: []Mark{{At: 4 * time.Second, Label: "upgrade"}},
	}
}

// checkSVG fails unless path holds a well-formed, non-empty SVG document
// containing every want.
func checkSVG(t *testing.T, path string, want ...string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) < 1000 {
		t.Fatalf("%s: only %d bytes", path, len(data))
	}
	dec := xml.NewDecoder(bytes.NewReader(data))
	root := ""
	elements := 0
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: not well-formed XML: %v", path, err)
		}
		if se, ok := tok.(xml.StartElement); ok {
			if root == "" {
				root = se.Name.Local
			}
			elements++
		}
	}
	if root != "svg" || elements < 20 {
		t.Errorf("%s: root <%s>, %d elements: want an <svg> with a drawing", path, root, elements)
	}
	for _, w := range want {
		if !strings.Contains(string(data), w) {
			t.Errorf("%s: no %q", path, w)
		}
	}
}

func TestLatencySVG(t *testing.T) {
	p, err := Latency(chart())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "latency.svg")
	if err := Save(p, path); err != nil {
		t.Fatal(err)
	}
	checkSVG(t, path, "upgrade under load", "latency (ms)", "lodis p99", "nginx p50", "systemctl restart p99", "upgrade")
}

func TestFailuresSVG(t *testing.T) {
	p, err := Failures(chart())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "failures.svg")
	if err := Save(p, path); err != nil {
		t.Fatal(err)
	}
	checkSVG(t, path, "failed requests/s", "lodis", "nginx", "upgrade")
	// The restart fails 50 in each of 4 buckets and 200 in one, all within
	// second 4: 400 failed in that 1 s bin.
	if p.Y.Max != 4*50+200 {
		t.Errorf("y max = %v failed/s, want %d", p.Y.Max, 4*50+200)
	}
}

func TestSavePNG(t *testing.T) {
	p, err := Latency(chart())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := Save(p, filepath.Join(dir, "latency.png")); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "latency.png"))
	if err != nil || !bytes.HasPrefix(data, []byte("\x89PNG\r\n")) {
		t.Errorf("not a PNG (%d bytes, %v)", len(data), err)
	}
	if err := Save(p, filepath.Join(dir, "latency.pdf")); err == nil {
		t.Error("saved a .pdf")
	}
}

func TestDecades(t *testing.T) {
	var labels []string
	for _, tk := range (decades{}).Ticks(0.1, 1000) {
		if tk.Label != "" {
			labels = append(labels, tk.Label)
		}
	}
	if got := strings.Join(labels, " "); got != "0.1 1 10 100 1000" {
		t.Errorf("labels %q, want every decade from 0.1 to 1000", got)
	}
}

func TestLinearAndEmpty(t *testing.T) {
	c := chart()
	c.LinearY = true
	// A series that never succeeded has no latency points; the chart must
	// still draw (a log axis would have no range).
	c.Series = append(c.Series, Series{Name: "down", Interval: time.Second, Timeline: []load.Bucket{{Sent: 5, Failed: 5}}})
	for _, f := range []func(Chart) error{
		func(c Chart) error { p, err := Latency(c); return render(p, err) },
		func(c Chart) error { p, err := Failures(c); return render(p, err) },
	} {
		if err := f(c); err != nil {
			t.Error(err)
		}
		if err := f(Chart{Series: []Series{{Name: "down", Interval: time.Second}}}); err != nil {
			t.Errorf("empty timeline: %v", err)
		}
	}
	if _, err := Latency(Chart{}); err == nil {
		t.Error("a chart without series was drawn")
	}
	if _, err := Failures(Chart{Series: []Series{{Name: "x"}}}); err == nil {
		t.Error("a series without interval was drawn")
	}
}

// render renders p, so that drawing errors and panics surface.
func render(p *gonum.Plot, err error) error {
	if err != nil {
		return err
	}
	return WriteSVG(io.Discard, p)
}
