// Package plot draws load timelines from package load as SVG (or PNG) charts: latency
// over time (p50 and p99 per interval) and failed requests per second, with
// several runs (lodis and its baselines) on the same axes.
package plot

import (
	"errors"
	"fmt"
	"image/color"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"time"

	gonum "gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/text"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"

	"github.com/lodis/lodis/internal/load"
)

// Width and Height are the size of the image that Save and WriteSVG write.
const (
	Width  = 8 * vg.Inch
	Height = 4 * vg.Inch
)

// DefaultFailureBin is the width of a bar of the failures chart when
// Chart.FailureBin is zero.
const DefaultFailureBin = time.Second

// Series is one run's timeline, drawn in one colour.
type Series struct {
	Name     string        // legend text, e.g. "lodis" or "nginx"
	Interval time.Duration // width of a timeline bucket; required
	Timeline []load.Bucket
}

// FromResult returns the Series of a load result.
func FromResult(name string, r *load.Result) Series {
	return Series{Name: name, Interval: r.Interval, Timeline: r.Timeline}
}

// Mark is a vertical line across a chart, e.g. where an upgrade began.
type Mark struct {
	At    time.Duration // offset from the start of the timelines
	Label string        // text next to the line; may be empty
}

// Chart is what to draw. The time axis is the offset from each run's own
// start, so runs made one after another line up.
type Chart struct {
	Title  string
	Series []Series // at least one
	Marks  []Mark

	// LinearY draws latency on a linear axis. Default: logarithmic, so a
	// p99 spike a thousand times the median leaves the median readable.
	LinearY bool

	// FailureBin is the width of the bins failures are counted in. Default
	// DefaultFailureBin (1 s); rounded up to a whole number of buckets.
	FailureBin time.Duration
}

func (c Chart) check() error {
	if len(c.Series) == 0 {
		return errors.New("plot: no series")
	}
	for _, s := range c.Series {
		if s.Interval <= 0 {
			return fmt.Errorf("plot: series %q: interval %v is not positive", s.Name, s.Interval)
		}
	}
	return nil
}

// Latency returns a chart of p99 (solid) and p50 (dashed) latency in
// milliseconds per bucket, one colour per series. Buckets without a
// successful request are left out.
func Latency(c Chart) (*gonum.Plot, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	p := newPlot(c.Title, "latency (ms)")
	lo, hi := math.Inf(1), math.Inf(-1)
	var lines []gonum.Plotter
	for i, s := range c.Series {
		var p50, p99 plotter.XYs
		for _, b := range s.Timeline {
			if b.OK == 0 {
				continue
			}
			x := (b.Start + s.Interval/2).Seconds()
			y50, y99 := max(ms(b.P50), minLatency), max(ms(b.P99), minLatency)
			p50 = append(p50, plotter.XY{X: x, Y: y50})
			p99 = append(p99, plotter.XY{X: x, Y: y99})
			lo, hi = min(lo, y50, y99), max(hi, y50, y99)
		}
		for _, l := range []struct {
			xys    plotter.XYs
			label  string
			dashed bool
		}{{p99, " p99", false}, {p50, " p50", true}} {
			if len(l.xys) == 0 {
				continue
			}
			line, err := plotter.NewLine(l.xys)
			if err != nil {
				return nil, fmt.Errorf("plot: series %q: %w", s.Name, err)
			}
			line.Color = plotutil.Color(i)
			line.Width = vg.Points(1.2)
			if l.dashed {
				line.Dashes = []vg.Length{vg.Points(4), vg.Points(2)}
				line.Width = vg.Points(0.8)
			}
			lines = append(lines, line)
			p.Legend.Add(s.Name+l.label, line)
		}
	}
	if !c.LinearY && hi > 0 {
		// Whole decades, so that every decade gets a labelled tick.
		p.Y.Min = math.Pow10(int(math.Floor(math.Log10(lo))))
		p.Y.Max = math.Pow10(int(math.Ceil(math.Log10(hi))))
		if p.Y.Max <= p.Y.Min {
			p.Y.Max = 10 * p.Y.Min
		}
		p.Y.Scale = gonum.LogScale{}
		p.Y.Tick.Marker = decades{}
	}
	addReversed(p, lines)
	p.Add(marks(c.Marks)...)
	return p, nil
}

// Failures returns a chart of failed requests per second, counted in bins of
// c.FailureBin by the time the requests were due, one step line per series.
func Failures(c Chart) (*gonum.Plot, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	bin := c.FailureBin
	if bin <= 0 {
		bin = DefaultFailureBin
	}
	p := newPlot(c.Title, "failed requests/s")
	p.Y.Min = 0
	var lines []gonum.Plotter
	for i, s := range c.Series {
		per := max(int((bin+s.Interval-1)/s.Interval), 1)
		width := time.Duration(per) * s.Interval
		counts := make([]int, (len(s.Timeline)+per-1)/per)
		for j, b := range s.Timeline {
			counts[j/per] += b.Failed
		}
		xys := make(plotter.XYs, 0, len(counts)+1)
		for k, n := range counts {
			xys = append(xys, plotter.XY{X: (time.Duration(k) * width).Seconds(), Y: float64(n) / width.Seconds()})
		}
		if len(counts) == 0 {
			continue
		}
		// A step line needs the end of its last bin.
		xys = append(xys, plotter.XY{X: (time.Duration(len(counts)) * width).Seconds(), Y: xys[len(xys)-1].Y})
		line, err := plotter.NewLine(xys)
		if err != nil {
			return nil, fmt.Errorf("plot: series %q: %w", s.Name, err)
		}
		line.StepStyle = plotter.PostStep
		line.Color = plotutil.Color(i)
		line.Width = vg.Points(1.2)
		lines = append(lines, line)
		p.Legend.Add(s.Name, line)
	}
	addReversed(p, lines)
	p.Add(marks(c.Marks)...)
	return p, nil
}

// minLatency is the floor of the latency axis, in ms (1 µs, the resolution
// of package load), so that a log axis never meets zero.
const minLatency = 0.001

// WriteSVG writes p as an SVG of Width × Height to w. The legend, if any, is
// drawn to the right of the chart rather than over the data.
func WriteSVG(w io.Writer, p *gonum.Plot) error {
	return write(w, p, vgsvg.New(Width, Height))
}

// Save writes p as a Width × Height image to the file at path, as SVG or PNG
// by path's extension (".svg" or ".png").
func Save(p *gonum.Plot, path string) error {
	var c canvas
	switch filepath.Ext(path) {
	case ".svg":
		c = vgsvg.New(Width, Height)
	case ".png":
		c = vgimg.PngCanvas{Canvas: vgimg.New(Width, Height)}
	default:
		return fmt.Errorf("plot: %s: want a .svg or .png file", path)
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	if err := write(f, p, c); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	return nil
}

type canvas interface {
	vg.CanvasSizer
	io.WriterTo
}

// write draws p on c with the legend to the right of the chart, and writes c
// to w.
func write(w io.Writer, p *gonum.Plot, c canvas) error {
	dc := draw.New(c)
	leg := p.Legend
	q := *p
	q.Legend = gonum.NewLegend()
	pad := vg.Points(8)
	width := leg.Rectangle(dc).Max.X - dc.Min.X
	if width > 0 {
		width += 2 * pad
	}
	q.Draw(draw.Crop(dc, 0, -width, 0, 0))
	if width > 0 {
		leg.Left, leg.Top = true, true
		top := pad
		if q.Title.Text != "" {
			top += q.Title.TextStyle.Height(q.Title.Text) + q.Title.Padding
		}
		leg.Draw(draw.Crop(dc, dc.Max.X-dc.Min.X-width+pad, 0, 0, -top))
	}
	if _, err := c.WriteTo(w); err != nil {
		return fmt.Errorf("plot: write: %w", err)
	}
	return nil
}

func newPlot(title, ylabel string) *gonum.Plot {
	p := gonum.New()
	p.Title.Text = title
	p.X.Label.Text = "time (s)"
	p.Y.Label.Text = ylabel
	p.X.Min = 0
	p.Legend.Top = true
	p.Legend.TextStyle.Font.Size = vg.Points(9)
	p.Add(plotter.NewGrid())
	return p
}

// addReversed adds ls last first, so that the first series (lodis) is drawn
// on top where lines overlap, e.g. at zero failures.
func addReversed(p *gonum.Plot, ls []gonum.Plotter) {
	for i := len(ls) - 1; i >= 0; i-- {
		p.Add(ls[i])
	}
}

// decades marks a log axis with a labelled tick at each power of ten and
// unlabelled ones at 2–9 times it. (gonum's LogTicks drops the labels below 1:
// it truncates a logarithm towards zero.)
type decades struct{}

func (decades) Ticks(lo, hi float64) []gonum.Tick {
	first := int(math.Floor(math.Log10(lo) + 1e-9))
	last := int(math.Ceil(math.Log10(hi) - 1e-9))
	var ticks []gonum.Tick
	for e := first; e <= last; e++ {
		v := math.Pow10(e)
		ticks = append(ticks, gonum.Tick{Value: v, Label: strconv.FormatFloat(v, 'f', -1, 64)})
		if e == last {
			break
		}
		for k := 2; k <= 9; k++ {
			ticks = append(ticks, gonum.Tick{Value: float64(k) * v})
		}
	}
	return ticks
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func marks(ms []Mark) []gonum.Plotter {
	out := make([]gonum.Plotter, len(ms))
	for i, m := range ms {
		out[i] = mark(m)
	}
	return out
}

// mark draws a Mark as a grey vertical line from the bottom to the top of the
// data area, with its label at the top.
type mark Mark

var markStyle = draw.LineStyle{Color: color.Gray{Y: 96}, Width: vg.Points(0.8), Dashes: []vg.Length{vg.Points(2), vg.Points(2)}}

func (m mark) Plot(c draw.Canvas, p *gonum.Plot) {
	trX, _ := p.Transforms(&c)
	x := trX(m.At.Seconds())
	if x < c.Min.X || x > c.Max.X {
		return
	}
	c.StrokeLine2(markStyle, x, c.Min.Y, x, c.Max.Y)
	if m.Label == "" {
		return
	}
	sty := text.Style{
		Color:   color.Gray{Y: 64},
		Font:    font.From(plotter.DefaultFont, vg.Points(8)),
		Handler: gonum.DefaultTextHandler,
		XAlign:  draw.XLeft,
		YAlign:  draw.YTop,
	}
	c.FillText(sty, vg.Point{X: x + vg.Points(2), Y: c.Max.Y - vg.Points(2)}, m.Label)
}

// DataRange makes the time axis reach the mark; it leaves the other axis
// alone.
func (m mark) DataRange() (xmin, xmax, ymin, ymax float64) {
	x := m.At.Seconds()
	return x, x, math.Inf(1), math.Inf(-1)
}
