// Package report writes the benchmark report: markdown tables in which every
// figure stands next to its goal and its peers' figures, under a header that
// states the machine, the date and the exact command. It refuses to write a
// report with an empty or non-numeric figure.
package report

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"time"
)

// Op compares a figure with its goal.
type Op string

// The comparisons a Goal can make.
const (
	AtMost  Op = "≤"
	AtLeast Op = "≥"
)

// Goal is the figure a row must reach.
type Goal struct {
	Op    Op      // AtMost or AtLeast; required
	Value float64 // the bound, in the row's unit or, with Of, as a ratio

	// Of, if set, names a peer of the table: the goal is then on the ratio
	// subject/peer, e.g. Goal{AtLeast, 0.9, "net/http"} for "at least 90% of
	// bare net/http's throughput".
	Of string
}

// Row is one figure of the subject with its goal and its peers' figures.
type Row struct {
	Metric string  // what is measured, e.g. "p99 latency"; required
	Unit   string  // e.g. "ms", "requests/s"; may be empty for a pure number
	Goal   Goal    // required
	Value  float64 // the subject's figure
	Peers  []float64

	// Digits, if positive, is the number of decimals printed. Default: 4
	// significant digits, more for a fraction that would otherwise print as
	// a whole number (0.99999 is not 1).
	Digits int
}

// Plot is an image shown under a table.
type Plot struct {
	Alt  string // alternative text; required
	Path string // relative to the report file; required
}

// Table is one section of the report.
type Table struct {
	Title   string   // section heading; required
	Subject string   // the measured column's heading; default "lodis"
	Peers   []string // peer column headings, in Row.Peers order
	Rows    []Row

	// Ratios adds after each peer's column the ratio subject/peer. Where the
	// peer's figure is 0 (failed requests, say) the ratio cell reads "—".
	Ratios bool

	Note  string // markdown written under the table, e.g. how it was measured
	Plots []Plot

	// NotRun, if set, says why the whole table was not measured, e.g. "needs
	// lodis supervise, which is not installed". The table is then written as
	// its title, the marker "**Not run:** NotRun" and its Note, and must have
	// no rows and no plots: a figure is either measured or plainly absent.
	NotRun string
}

// NotRunMarker starts the line written in place of a table whose NotRun is
// set.
const NotRunMarker = "**Not run:**"

// Report is a whole report.
type Report struct {
	Title   string // the page's heading; required
	Summary string // markdown written under the machine header
	Machine Machine
	Tables  []Table
}

// Check returns every problem that would leave a cell empty or meaningless:
// an empty machine field, a table without rows (unless marked NotRun, and
// then it must have none), a row without metric or goal, a missing peer
// figure, a figure that is NaN or infinite, an undefined ratio, a goal on an
// unknown peer. It returns nil when the report can be written.
func (r *Report) Check() error {
	var errs []error
	if r.Title == "" {
		errs = append(errs, errors.New("report: no title"))
	}
	for _, err := range r.Machine.problems() {
		errs = append(errs, fmt.Errorf("report: %w", err))
	}
	if len(r.Tables) == 0 {
		errs = append(errs, errors.New("report: no table"))
	}
	for i, t := range r.Tables {
		name := t.Title
		if name == "" {
			name = fmt.Sprintf("#%d", i+1)
			errs = append(errs, fmt.Errorf("report: table %s: no title", name))
		}
		for _, err := range t.problems() {
			errs = append(errs, fmt.Errorf("report: table %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

func (t Table) problems() []error {
	var errs []error
	if t.NotRun != "" {
		if strings.TrimSpace(t.NotRun) == "" || strings.Contains(t.NotRun, "\n") {
			errs = append(errs, errors.New("not-run reason must be one non-blank line"))
		}
		if len(t.Rows) > 0 || len(t.Plots) > 0 {
			errs = append(errs, errors.New("marked not run but has rows or plots"))
		}
		return errs
	}
	if len(t.Rows) == 0 {
		errs = append(errs, errors.New("no row (mark the table NotRun if it was not measured)"))
	}
	for i, p := range t.Peers {
		if strings.TrimSpace(p) == "" {
			errs = append(errs, fmt.Errorf("peer %d has no name", i+1))
		}
	}
	for _, p := range t.Plots {
		if p.Alt == "" || p.Path == "" {
			errs = append(errs, fmt.Errorf("plot %q: alt text and path are required", p.Path))
		}
	}
	for i, row := range t.Rows {
		name := row.Metric
		if name == "" {
			name = fmt.Sprintf("#%d", i+1)
			errs = append(errs, fmt.Errorf("row %s: no metric", name))
		}
		bad := func(format string, a ...any) {
			errs = append(errs, fmt.Errorf("row %s: %s", name, fmt.Sprintf(format, a...)))
		}
		if row.Goal.Op != AtMost && row.Goal.Op != AtLeast {
			bad("goal has no comparison (want AtMost or AtLeast)")
		}
		if !finite(row.Goal.Value) {
			bad("goal is %v", row.Goal.Value)
		}
		if row.Goal.Of != "" && t.peer(row.Goal.Of) < 0 {
			bad("goal is relative to %q, which is not a peer of the table", row.Goal.Of)
		}
		if !finite(row.Value) {
			bad("figure is %v", row.Value)
		}
		if len(row.Peers) != len(t.Peers) {
			bad("%d peer figures for %d peers", len(row.Peers), len(t.Peers))
		}
		for j, v := range row.Peers {
			if !finite(v) {
				bad("peer %s figure is %v", t.peerName(j), v)
				continue
			}
			if row.Goal.Of == t.peerName(j) && v == 0 {
				bad("goal is relative to %s, whose figure is 0", t.peerName(j))
			}
		}
	}
	return errs
}

func (t Table) peer(name string) int {
	for i, p := range t.Peers {
		if p == name {
			return i
		}
	}
	return -1
}

func (t Table) peerName(i int) string {
	if i < len(t.Peers) {
		return t.Peers[i]
	}
	return fmt.Sprintf("#%d", i+1)
}

func (t Table) subject() string {
	if t.Subject == "" {
		return "lodis"
	}
	return t.Subject
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// Met reports whether row meets its goal in table t. It assumes t passed
// Check.
func (t Table) Met(row Row) bool {
	v := row.Value
	if row.Goal.Of != "" {
		v /= row.Peers[t.peer(row.Goal.Of)]
	}
	if row.Goal.Op == AtMost {
		return v <= row.Goal.Value
	}
	return v >= row.Goal.Value
}

// Write writes the report as markdown to w. It writes nothing and returns
// Check's error when a cell would be empty.
func (r *Report) Write(w io.Writer) error {
	if err := r.Check(); err != nil {
		return err
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "# %s\n\n", r.Title)
	m := r.Machine
	b.WriteString("| machine | value |\n|---|---|\n")
	for _, kv := range [][2]string{
		{"OS", m.OS}, {"CPU", m.CPU}, {"cores", strconv.Itoa(m.Cores)}, {"memory", gib(m.Memory)},
		{"kernel", m.Kernel}, {"systemd", m.Systemd}, {"Go", m.Go},
		{"date", m.Date.UTC().Format(time.RFC3339)}, {"command", "`" + m.Command + "`"},
	} {
		fmt.Fprintf(&b, "| %s | %s |\n", kv[0], cell(kv[1]))
	}
	if r.Summary != "" {
		fmt.Fprintf(&b, "\n%s\n", strings.TrimSpace(r.Summary))
	}
	for _, t := range r.Tables {
		fmt.Fprintf(&b, "\n## %s\n\n", t.Title)
		t.write(&b)
	}
	_, err := w.Write(b.Bytes())
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	return nil
}

// WriteFile writes the report to the file at path, and nothing when Check
// fails.
func (r *Report) WriteFile(path string) error {
	var b bytes.Buffer
	if err := r.Write(&b); err != nil {
		return err
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	return nil
}

// The fixed columns of a table; every other column holds a figure.
const (
	colMetric = "metric"
	colGoal   = "goal"
	colMet    = "met"
	noRatio   = "—" // a ratio to a peer whose figure is 0
)

func (t Table) write(b *bytes.Buffer) {
	if t.NotRun != "" {
		fmt.Fprintf(b, "%s %s\n", NotRunMarker, strings.TrimSpace(t.NotRun))
		if t.Note != "" {
			fmt.Fprintf(b, "\n%s\n", strings.TrimSpace(t.Note))
		}
		return
	}
	ratios := t.Ratios
	head := []string{colMetric, colGoal, t.subject(), colMet}
	for _, p := range t.Peers {
		head = append(head, p)
		if ratios {
			head = append(head, t.subject()+" / "+p)
		}
	}
	line(b, head)
	sep := make([]string, len(head))
	for i := range sep {
		sep[i] = "---:"
		if i == 0 || i == 1 || i == 3 {
			sep[i] = "---"
		}
	}
	line(b, sep)
	for _, row := range t.Rows {
		metric := row.Metric
		if row.Unit != "" {
			metric += " (" + row.Unit + ")"
		}
		met := "no"
		if t.Met(row) {
			met = "yes"
		}
		cells := []string{metric, goalText(row), format(row.Value, row.Digits), met}
		for _, v := range row.Peers {
			cells = append(cells, format(v, row.Digits))
			if ratios {
				r := noRatio
				if v != 0 {
					r = format(row.Value/v, 0)
				}
				cells = append(cells, r)
			}
		}
		line(b, cells)
	}
	if t.Note != "" {
		fmt.Fprintf(b, "\n%s\n", strings.TrimSpace(t.Note))
	}
	for _, p := range t.Plots {
		fmt.Fprintf(b, "\n![%s](%s)\n", p.Alt, p.Path)
	}
}

// goalText prints a goal as it was set: shortest form, no padding digits.
func goalText(row Row) string {
	g := row.Goal
	v := strconv.FormatFloat(g.Value, 'f', -1, 64)
	if g.Of != "" {
		return fmt.Sprintf("%s %s × %s", g.Op, v, g.Of)
	}
	s := fmt.Sprintf("%s %s", g.Op, v)
	if row.Unit != "" {
		s += " " + row.Unit
	}
	return s
}

func line(b *bytes.Buffer, cells []string) {
	b.WriteString("|")
	for _, c := range cells {
		b.WriteString(" " + cell(c) + " |")
	}
	b.WriteString("\n")
}

// cell escapes what would break a table row.
func cell(s string) string {
	s = strings.ReplaceAll(s, "|", `\|`)
	return strings.ReplaceAll(s, "\n", " ")
}

// format prints v with digits decimals, or by default with 4 significant
// digits and never as a whole number it is not, for |v| < 10.
func format(v float64, digits int) string {
	if digits > 0 {
		return strconv.FormatFloat(v, 'f', digits, 64)
	}
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	d := 3
	if a := math.Abs(v); a >= 1 {
		d = max(3-int(math.Floor(math.Log10(a))), 0)
	} else if a > 0 {
		d = 3 - int(math.Floor(math.Log10(a)))
	}
	s := strconv.FormatFloat(v, 'f', d, 64)
	for math.Abs(v) < 10 && d < 12 {
		if f, _ := strconv.ParseFloat(s, 64); f != math.Trunc(f) {
			break
		}
		d++
		s = strconv.FormatFloat(v, 'f', d, 64)
	}
	return s
}

// Verify checks a report as written: in every table whose first column is
// "metric", each cell but the metric, goal and met columns must be a number
// (a ratio cell may read "—": the peer's figure is 0), and every section
// ("## " heading) must hold such a table or a line starting with
// NotRunMarker. It returns every offending cell and section, or nil. Use it
// on a report.md produced by a run.
func Verify(md []byte) error {
	var errs []error
	sc := bufio.NewScanner(bytes.NewReader(md))
	var head []string
	n := 0
	section, sectionLine, filled := "", 0, true
	endSection := func() {
		if !filled {
			errs = append(errs, fmt.Errorf("line %d: section %q has neither a metric table nor %q", sectionLine, section, NotRunMarker))
		}
	}
	for sc.Scan() {
		n++
		text := strings.TrimSpace(sc.Text())
		if title, ok := strings.CutPrefix(text, "## "); ok {
			endSection()
			section, sectionLine, filled = title, n, false
		}
		if strings.HasPrefix(text, NotRunMarker) {
			filled = true
		}
		if !strings.HasPrefix(text, "|") {
			head = nil
			continue
		}
		cells := splitRow(text)
		switch {
		case head == nil:
			head = cells
			continue
		case strings.HasPrefix(cells[0], "---"):
			continue
		case head[0] != colMetric:
			continue
		}
		filled = true
		if len(cells) != len(head) {
			errs = append(errs, fmt.Errorf("line %d: %d cells under %d headings", n, len(cells), len(head)))
			continue
		}
		for i, c := range cells {
			h := head[i]
			if h == colMetric || h == colGoal || h == colMet {
				if c == "" {
					errs = append(errs, fmt.Errorf("line %d: %s is empty", n, h))
				}
				continue
			}
			if c == noRatio && strings.Contains(h, " / ") {
				continue
			}
			if _, err := strconv.ParseFloat(c, 64); err != nil {
				errs = append(errs, fmt.Errorf("line %d, column %q: %q is not a number", n, h, c))
			}
		}
	}
	endSection()
	return errors.Join(errs...)
}

// splitRow splits "| a | b \| c |" into its trimmed cells.
func splitRow(s string) []string {
	s = strings.TrimSuffix(strings.TrimPrefix(s, "|"), "|")
	var cells []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) && s[i+1] == '|' {
			cur.WriteByte('|')
			i++
			continue
		}
		if s[i] == '|' {
			cells = append(cells, strings.TrimSpace(cur.String()))
			cur.Reset()
			continue
		}
		cur.WriteByte(s[i])
	}
	return append(cells, strings.TrimSpace(cur.String()))
}
