package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// TestArchitectureTableIsTopDown holds docs/architecture.md to what it says
// of its package table: every package of the product (not examples/, test/
// or packaging/) has a row, and a package imports only packages in rows
// below its own.
func TestArchitectureTableIsTopDown(t *testing.T) {
	const module = "github.com/lodis/lodis/"
	doc, err := os.ReadFile("../../docs/architecture.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(doc), "\n## Packages\n")
	if !ok {
		t.Fatal(`docs/architecture.md has no "## Packages" section`)
	}
	table, _, _ = strings.Cut(table, "\n## ")
	row := map[string]int{} // package → its row, 0 at the top
	n := 0
	for _, line := range strings.Split(table, "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		first, _, _ := strings.Cut(strings.TrimPrefix(line, "| "), " |")
		for _, m := range regexp.MustCompile("`([^`]+)`").FindAllStringSubmatch(first, -1) {
			row[m[1]] = n
		}
		n++
	}
	out, err := exec.Command("go", "list", "-json=ImportPath,Imports", "../../...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p struct {
			ImportPath string
			Imports    []string
		}
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		name := strings.TrimPrefix(p.ImportPath, module)
		if strings.HasPrefix(name, "examples/") || strings.HasPrefix(name, "test/") || strings.HasPrefix(name, "packaging/") {
			continue
		}
		r, ok := row[name]
		if !ok {
			t.Errorf("package %s has no row in docs/architecture.md's table", name)
			continue
		}
		for _, imp := range p.Imports {
			dep, ours := strings.CutPrefix(imp, module)
			if !ours {
				continue
			}
			if d, ok := row[dep]; ok && d <= r && dep != name {
				t.Errorf("%s (row %d) imports %s (row %d): the table says a package imports only those below it", name, r+1, dep, d+1)
			}
		}
	}
}
