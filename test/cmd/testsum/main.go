// Command testsum reads `go test -json` on stdin, prints the tests' ordinary
// output, and keeps a running count of passed, failed and skipped tests in a
// state file; `testsum -total FILE` prints the totals as one line,
// "tests: N passed, N failed, N skipped", the closing line of `make test`.
// When a test fails, its own output is printed again once the input ends,
// so the reason stays at the end of a long log (a package may print a
// journal dump after its tests).
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"
)

type event struct {
	Action  string
	Package string
	Test    string
	Output  string
}

type counts struct{ Passed, Failed, Skipped int }

func load(path string) counts {
	var c counts
	if b, err := os.ReadFile(path); err == nil {
		json.Unmarshal(b, &c)
	}
	return c
}

func main() {
	state := flag.String("state", ".testsum.json", "file holding the running counts")
	total := flag.Bool("total", false, "print the totals line and exit")
	flag.Parse()
	if *total {
		c := load(*state)
		fmt.Printf("tests: %d passed, %d failed, %d skipped\n", c.Passed, c.Failed, c.Skipped)
		return
	}
	c := load(*state)
	out := map[string][]string{} // output per test, until it passes
	var failed []string          // failed tests, in order, as "package TestName"
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			fmt.Println(sc.Text()) // build errors and the like are not JSON
			continue
		}
		switch e.Action {
		case "output":
			fmt.Print(e.Output)
			if e.Test != "" {
				k := e.Package + " " + e.Test
				out[k] = append(out[k], e.Output)
			}
		case "pass", "fail", "skip":
			if e.Test == "" {
				continue // package result, already in the output
			}
			k := e.Package + " " + e.Test
			switch e.Action {
			case "pass":
				c.Passed++
			case "fail":
				c.Failed++
				failed = append(failed, k)
			case "skip":
				c.Skipped++
			}
			if e.Action != "fail" {
				delete(out, k)
			}
		}
	}
	for _, k := range failed {
		fmt.Printf("--- output of failed test %s ---\n", k)
		for _, l := range out[k] {
			fmt.Print(l)
		}
	}
	b, _ := json.Marshal(c)
	if err := os.WriteFile(*state, b, 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "testsum:", err)
		os.Exit(1)
	}
}
