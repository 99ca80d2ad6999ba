package appconf

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// shipped is the commented-out app.conf the Debian package installs as
// /etc/lodis/app.conf.
var shipped = filepath.Join("..", "..", "packaging", "deb", "app.conf")

// TestShippedFileListsEveryKey: the shipped file names every key once, as a
// commented-out line; it parses as it is (all comments: the defaults), and
// with every key line uncommented it still gives the defaults, but for
// ENV_FILE, which has none and shows an example path.
func TestShippedFileListsEveryKey(t *testing.T) {
	b, err := os.ReadFile(shipped)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	for _, k := range Keys {
		re := regexp.MustCompile(`(?m)^#` + k + `=`)
		if n := len(re.FindAllString(text, -1)); n != 1 {
			t.Errorf("%s: #%s= appears %d times, want once", shipped, k, n)
		}
	}
	c, err := Parse(strings.NewReader(text), shipped)
	if err != nil {
		t.Fatalf("the shipped file does not parse: %v", err)
	}
	if !reflect.DeepEqual(c, Default()) {
		t.Errorf("the shipped file is not the defaults: %+v", c)
	}
	uncommented := regexp.MustCompile(`(?m)^#([A-Z_]+=)`).ReplaceAllString(text, "$1")
	c, err = Parse(strings.NewReader(uncommented), shipped+" (uncommented)")
	if err != nil {
		t.Fatalf("the shipped file with its keys uncommented does not parse: %v", err)
	}
	if c.EnvFile == "" {
		t.Errorf("ENV_FILE shows no example path")
	}
	c.EnvFile = ""
	if !reflect.DeepEqual(c, Default()) {
		t.Errorf("the shipped file's values are not the defaults:\n got %+v\nwant %+v", c, Default())
	}
}
