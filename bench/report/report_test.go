package report

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func machine() Machine {
	return Machine{
		OS: "Debian GNU/Linux 12 (bookworm)", CPU: "Test CPU @ 2.0GHz", Cores: 2, Memory: 24 << 30,
		Kernel: "6.1.0-test", Systemd: "systemd 252 (252.39-1~deb12u1)", Go: "go1.26.8",
		Date: time.Date(2025, 11, 22, 5, 0, 0, 0, time.UTC), Command: "make bench QUICK=1",
	}
}

func sample() *Report {
	return &Report{
		Title:   "lodis benchmarks",
		Summary: "Quick run.",
		Machine: machine(),
		Tables: []Table{
			{
				Title:  "Throughput and latency",
				Peers:  []string{"net/http", "nginx"},
				Ratios: true,
				Rows: []Row{
					{Metric: "throughput", Unit: "requests/s", Goal: Goal{Op: AtLeast, Value: 0.9, Of: "net/http"}, Value: 41234.5, Peers: []float64{44100, 52000.25}},
					{Metric: "p99 latency", Unit: "ms", Goal: Goal{Op: AtMost, Value: 5}, Value: 0.84, Peers: []float64{0.8, 0.61}},
					{Metric: "success ratio", Goal: Goal{Op: AtLeast, Value: 1}, Value: 0.99999, Peers: []float64{1, 1}},
				},
				Plots: []Plot{{Alt: "latency over time", Path: "latency.svg"}},
			},
			{
				Title: "Upgrade under load",
				Peers: []string{"systemctl restart", "nginx | USR2"},
				Rows: []Row{
					{Metric: "failed requests", Goal: Goal{Op: AtMost, Value: 0}, Value: 0, Peers: []float64{20, 13}},
					{Metric: "window", Unit: "s", Goal: Goal{Op: AtMost, Value: 10}, Value: 3.2, Peers: []float64{0.5, 1.25}, Digits: 2},
				},
				Note: "Window: from the drop to the last instance healthy.",
			},
		},
	}
}

func TestWriteEveryFigureIsANumber(t *testing.T) {
	var b bytes.Buffer
	if err := sample().Write(&b); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	t.Log("\n" + md)
	if err := Verify(b.Bytes()); err != nil {
		t.Errorf("Verify: %v", err)
	}
	// Independently of Verify: every row of a figure table has a number in
	// each figure column.
	figures := 0
	for _, ln := range strings.Split(md, "\n") {
		if !strings.HasPrefix(ln, "| ") || strings.HasPrefix(ln, "| metric") || strings.HasPrefix(ln, "| machine") || strings.HasPrefix(ln, "| ---") {
			continue
		}
		cells := splitRow(ln)
		if len(cells) == 2 { // machine header
			if cells[1] == "" {
				t.Errorf("empty machine cell: %q", ln)
			}
			continue
		}
		for i, c := range cells {
			if i == 0 || i == 1 || i == 3 {
				continue
			}
			if _, err := strconv.ParseFloat(c, 64); err != nil && c != "—" {
				t.Errorf("cell %d of %q is not a number", i, ln)
			}
			figures++
		}
	}
	if figures != 3*(1+2*2)+2*(1+2) {
		t.Errorf("%d figures, want %d", figures, 3*5+2*3)
	}
	for _, want := range []string{
		"| machine | value |", "| cores | 2 |", "| memory | 24.0 GiB |", "| systemd | systemd 252 (252.39-1~deb12u1) |",
		"| date | 2025-11-22T05:00:00Z |", "| command | `make bench QUICK=1` |",
		"| metric | goal | lodis | met | net/http | lodis / net/http | nginx | lodis / nginx |",
		"| throughput (requests/s) | ≥ 0.9 × net/http | 41234 | yes | 44100 | 0.9350 | 52000 | 0.7930 |",
		"| p99 latency (ms) | ≤ 5 ms | 0.8400 | yes |",
		"| success ratio | ≥ 1 | 0.99999 | no | 1 | 0.99999 | 1 | 0.99999 |",
		"| failed requests | ≤ 0 | 0 | yes | 20 | 13 |",
		`| nginx \| USR2 |`,
		"| window (s) | ≤ 10 s | 3.20 | yes | 0.50 | 1.25 |",
		"![latency over time](latency.svg)",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
}

func TestVerifyFlagsBadCells(t *testing.T) {
	var b bytes.Buffer
	if err := sample().Write(&b); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct{ from, to string }{
		{"| 41234 |", "|  |"},
		{"| 0.8400 |", "| NaN ms |"},
		{"| 20 |", "| — |"}, // "—" is for ratios only
		{"| 0.9350 |", "| n/a |"},
	} {
		md := strings.Replace(b.String(), bad.from, bad.to, 1)
		if md == b.String() {
			t.Fatalf("%q not in the report", bad.from)
		}
		if err := Verify([]byte(md)); err == nil {
			t.Errorf("Verify accepted %q", bad.to)
		}
	}
}

func TestCheckRefuses(t *testing.T) {
	for name, spoil := range map[string]func(r *Report){
		"no title":           func(r *Report) { r.Title = "" },
		"no systemd":         func(r *Report) { r.Machine.Systemd = "" },
		"no command":         func(r *Report) { r.Machine.Command = "" },
		"no date":            func(r *Report) { r.Machine.Date = time.Time{} },
		"no tables":          func(r *Report) { r.Tables = nil },
		"no rows":            func(r *Report) { r.Tables[1].Rows = nil },
		"NaN figure":         func(r *Report) { r.Tables[0].Rows[1].Value = math.NaN() },
		"infinite peer":      func(r *Report) { r.Tables[0].Rows[1].Peers[0] = math.Inf(1) },
		"missing peer":       func(r *Report) { r.Tables[0].Rows[1].Peers = r.Tables[0].Rows[1].Peers[:1] },
		"no metric":          func(r *Report) { r.Tables[0].Rows[0].Metric = "" },
		"no goal":            func(r *Report) { r.Tables[0].Rows[0].Goal = Goal{} },
		"goal on a stranger": func(r *Report) { r.Tables[0].Rows[0].Goal.Of = "caddy" },
		"goal on a zero":     func(r *Report) { r.Tables[0].Rows[0].Peers[0] = 0 },
		"plot without alt":   func(r *Report) { r.Tables[0].Plots[0].Alt = "" },
	} {
		r := sample()
		spoil(r)
		var b bytes.Buffer
		err := r.Write(&b)
		if err == nil {
			t.Errorf("%s: written", name)
		} else if b.Len() != 0 {
			t.Errorf("%s: refused (%v) but wrote %d bytes", name, err, b.Len())
		}
	}
}

func TestFormat(t *testing.T) {
	for _, c := range []struct {
		v      float64
		digits int
		want   string
	}{
		{0, 0, "0"}, {13, 0, "13"}, {41234.5, 0, "41234"}, {2.5, 0, "2.500"}, {0.84, 0, "0.8400"},
		{0.000123456, 0, "0.0001235"}, {0.99999, 0, "0.99999"}, {0.9999999, 0, "0.9999999"},
		{1.00004, 0, "1.00004"}, {-3.25, 0, "-3.250"}, {3.2, 2, "3.20"}, {1234.5678, 1, "1234.6"},
	} {
		if got := format(c.v, c.digits); got != c.want {
			t.Errorf("format(%v, %d) = %q, want %q", c.v, c.digits, got, c.want)
		}
	}
}

func TestMet(t *testing.T) {
	tb := Table{Peers: []string{"bare"}}
	for _, c := range []struct {
		row  Row
		want bool
	}{
		{Row{Goal: Goal{Op: AtMost, Value: 5}, Value: 5, Peers: []float64{1}}, true},
		{Row{Goal: Goal{Op: AtMost, Value: 5}, Value: 5.01, Peers: []float64{1}}, false},
		{Row{Goal: Goal{Op: AtLeast, Value: 0.9, Of: "bare"}, Value: 90, Peers: []float64{100}}, true},
		{Row{Goal: Goal{Op: AtLeast, Value: 0.9, Of: "bare"}, Value: 89, Peers: []float64{100}}, false},
	} {
		if got := tb.Met(c.row); got != c.want {
			t.Errorf("Met(%+v) = %v", c.row, got)
		}
	}
}

func TestDetectMachine(t *testing.T) {
	m, err := DetectMachine(t.Context(), "go test")
	if err != nil {
		t.Logf("not everything detected: %v", err)
	}
	if m.Cores <= 0 || m.Memory == 0 || m.Kernel == "" || m.Go == "" || m.Command != "go test" || m.Date.IsZero() {
		t.Errorf("machine %+v", m)
	}
	if err == nil && len(m.problems()) != 0 {
		t.Errorf("no error but problems %v", m.problems())
	}
	t.Logf("%+v", m)
}

func TestWriteFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "report.md")
	if err := sample().WriteFile(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil || !bytes.HasPrefix(b, []byte("# lodis benchmarks\n")) {
		t.Errorf("report.md: %v %.40q", err, b)
	}
	r := sample()
	r.Machine.Kernel = ""
	bad := filepath.Join(t.TempDir(), "bad.md")
	if err := r.WriteFile(bad); err == nil {
		t.Error("a report with an empty cell was written")
	}
	if _, err := os.Stat(bad); !os.IsNotExist(err) {
		t.Errorf("bad report left a file: %v", err)
	}
}

func TestNotRunTable(t *testing.T) {
	r := sample()
	r.Tables = append(r.Tables, Table{
		Title:  "Chaos",
		NotRun: "needs lodis supervise, which is not installed",
		Note:   "Runs once the supervisor is installed.",
	})
	var b bytes.Buffer
	if err := r.Write(&b); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	if !strings.Contains(md, "## Chaos\n\n**Not run:** needs lodis supervise, which is not installed\n") {
		t.Errorf("not-run marker missing:\n%s", md)
	}
	if err := Verify(b.Bytes()); err != nil {
		t.Errorf("Verify: %v", err)
	}

	for name, spoil := range map[string]func(tb *Table){
		"rows too":     func(tb *Table) { tb.Rows = r.Tables[0].Rows },
		"plots too":    func(tb *Table) { tb.Plots = []Plot{{Alt: "x", Path: "x.svg"}} },
		"blank reason": func(tb *Table) { tb.NotRun = "  " },
		"two lines":    func(tb *Table) { tb.NotRun = "a\nb" },
	} {
		r := sample()
		tb := Table{Title: "Chaos", NotRun: "not built yet"}
		spoil(&tb)
		r.Tables = append(r.Tables, tb)
		if err := r.Check(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// A section whose table was dropped, marker and all, is an empty cell too.
func TestVerifyFlagsEmptySection(t *testing.T) {
	r := sample()
	r.Tables = append(r.Tables, Table{Title: "Chaos", NotRun: "not built yet"})
	var b bytes.Buffer
	if err := r.Write(&b); err != nil {
		t.Fatal(err)
	}
	md := strings.Replace(b.String(), "**Not run:** not built yet", "to be done", 1)
	if err := Verify([]byte(md)); err == nil || !strings.Contains(err.Error(), `"Chaos"`) {
		t.Errorf("Verify(section without table or marker) = %v", err)
	}
}
