// Package prometheus checks lodis's Prometheus alerting rules
// (lodis.rules.yml) with Debian's promtool: `promtool check rules`, and
// `promtool test rules` on lodis.rules.test.yml; and that every metric they
// read is one the supervisor exports.
package prometheus

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/lodis/lodis/internal/metrics"
)

func promtool(t *testing.T, args ...string) string {
	t.Helper()
	if _, err := exec.LookPath("promtool"); err != nil {
		t.Fatal("promtool not found: run test/deps.sh (Debian: apt-get install prometheus)")
	}
	out, err := exec.Command("promtool", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestRulesCheck(t *testing.T) {
	out := promtool(t, "check", "rules", "lodis.rules.yml")
	if !strings.Contains(out, "SUCCESS: 7 rules found") {
		t.Errorf("promtool check rules: %s", out)
	}
}

func TestRulesUnitTests(t *testing.T) {
	if out := promtool(t, "test", "rules", "lodis.rules.test.yml"); !strings.Contains(out, "SUCCESS") {
		t.Errorf("promtool test rules: %s", out)
	}
}

// TestRulesReadExportedMetrics: a rule on a metric nobody exports would
// never fire; each lodis_ name in the rules is one of the registry's.
func TestRulesReadExportedMetrics(t *testing.T) {
	b, err := os.ReadFile("lodis.rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	known, err := metrics.Families()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range regexp.MustCompile(`\blodis_[a-z_]+`).FindAllString(string(b), -1) {
		if _, ok := known[name]; !ok {
			t.Errorf("lodis.rules.yml reads %s, which the supervisor does not export", name)
		}
	}
}
