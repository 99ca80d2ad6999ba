// Package bench runs `lodis-bench --quick` (package bench/suite) the way
// `make bench QUICK=1` does: it boots its own throwaway systemd, runs every
// stage and writes a report. The test checks what a reader of the report
// would: every stage has a section, every figure is a number, a section
// without figures says plainly why, and every plot it shows exists.
package bench

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/lodis/lodis/bench/report"
	"github.com/lodis/lodis/bench/suite"
)

func TestQuickReport(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	out := t.TempDir()
	var progress bytes.Buffer
	path, err := suite.Run(ctx, suite.Options{Quick: true, OutDir: out, Command: "cd bench && go test ./test", Progress: &progress})
	t.Logf("progress:\n%s", progress.String())
	if err != nil {
		t.Fatalf("lodis-bench --quick: %v", err)
	}
	md, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("report:\n%s", md)
	if err := report.Verify(md); err != nil {
		t.Errorf("report.Verify: %v", err)
	}

	// One progress line as each step starts and one as it ends, with the
	// elapsed time and an ETA.
	steps := len(suite.StageNames()) + 1
	if n := strings.Count(progress.String(), " started "); n != steps {
		t.Errorf("%d progress lines say started, want %d", n, steps)
	}
	if n := len(regexp.MustCompile(`done in \S+ +elapsed \S+ +ETA \S+`).FindAllString(progress.String(), -1)); n != steps {
		t.Errorf("%d progress lines say done with elapsed and ETA, want %d", n, steps)
	}

	text := string(md)
	for _, want := range []string{"| command | `cd bench && go test ./test` |", "| systemd | systemd ", "| cores | ", "| kernel | ", "| memory | ", "quick run"} {
		if !strings.Contains(text, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	// Stages that need nothing but lodis, systemd and nginx always give
	// figures; the others say why they did not run.
	sections := sectionsOf(text)
	for _, title := range []string{"1. Cold vs warm activation", "2. Throughput and latency", "3. Footprint: 10 ports enabled",
		"4. Upgrade under load", "5. Chaos: workers aborting at random, through nginx vs direct"} {
		body, ok := sections[title]
		if !ok {
			// The upgrade table's title says when the lodis column is missing.
			for k, v := range sections {
				if strings.HasPrefix(k, title) {
					body, ok = v, true
				}
			}
		}
		if !ok {
			t.Errorf("no section %q", title)
			continue
		}
		if !strings.Contains(body, "| metric |") {
			t.Errorf("section %q has no figures:\n%s", title, body)
		}
	}
	for title, body := range sections {
		if strings.Contains(body, report.NotRunMarker+" failed") {
			t.Errorf("section %q failed: %s", title, body)
		}
	}
	if len(sections) < 10 {
		t.Errorf("%d sections, want every table of every stage (10)", len(sections))
	}

	// Every plot the report shows is an SVG in the output directory.
	plots := regexp.MustCompile(`!\[[^\]]+\]\(([^)]+)\)`).FindAllStringSubmatch(text, -1)
	if len(plots) < 6 {
		t.Errorf("%d plots, want latency and failures for throughput, upgrade and chaos", len(plots))
	}
	for _, p := range plots {
		b, err := os.ReadFile(filepath.Join(out, p[1]))
		if err != nil {
			t.Errorf("plot %s: %v", p[1], err)
			continue
		}
		if !bytes.Contains(b, []byte("<svg")) {
			t.Errorf("plot %s is not an SVG", p[1])
		}
	}
}

// sectionsOf maps each "## " heading of md to the text under it.
func sectionsOf(md string) map[string]string {
	out := map[string]string{}
	var title string
	for _, l := range strings.Split(md, "\n") {
		if h, ok := strings.CutPrefix(l, "## "); ok {
			title = h
			out[title] = ""
			continue
		}
		if title != "" {
			out[title] += l + "\n"
		}
	}
	return out
}
