// Package releases is `lodis releases`.
package releases

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/lodis/lodis/internal/buildinfo"
	"github.com/lodis/lodis/internal/cli"
	"github.com/lodis/lodis/internal/release"
	"github.com/lodis/lodis/internal/rollout"
)

// Main is `lodis releases`: every release in the store (active, previous,
// available, rejected with its reason), the rejected drops, and the last
// roll-out. It only reads. -json prints the same as one JSON object.
func Main(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("lodis releases", flag.ContinueOnError)
	root := fs.String("root", release.DefaultRoot, "release store directory")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := cli.Parse(fs, args, "lodis releases [-json] [-root DIR]", stderr); err != nil {
		return cli.Exit("lodis releases", err, stderr)
	}
	if err := printReleases(os.Stdout, stderr, *root, *asJSON); err != nil {
		fmt.Fprintf(stderr, "lodis releases: %v\n", err)
		return 1
	}
	return 0
}

// Report is the JSON of `lodis releases -json`.
type Report struct {
	release.Listing
	Rollout *rollout.State `json:"rollout,omitempty"`
}

func printReleases(w, warn io.Writer, root string, asJSON bool) error {
	s := release.NewStore(root)
	l, err := s.List()
	if err != nil {
		return err
	}
	ro, err := rollout.NewStore(s).Load()
	if errors.Is(err, rollout.ErrBadState) {
		// Said, not fatal: root's next upgrade quarantines the file.
		fmt.Fprintf(warn, "lodis releases: %s\n", cli.OneLine(err.Error()))
		ro, err = nil, nil
	}
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(Report{Listing: *l, Rollout: ro})
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "RELEASE\tVERSION\tSTATE\tSINCE\tNOTE")
	for _, e := range l.Releases {
		since := e.Activated
		if since.IsZero() {
			since = e.Imported
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", buildinfo.ShortSHA(e.SHA256), cli.Dash(cli.Clean(e.Version, 40)), e.State, when(since), cli.OneLine(e.Reason))
	}
	tw.Flush()
	if len(l.Rejected) > 0 {
		fmt.Fprintln(w, "\nREJECTED (newest first)")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "WHEN\tRELEASE\tSTAGE\tREASON")
		for _, r := range l.Rejected {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", when(r.Time), cli.Dash(buildinfo.ShortSHA(r.SHA256)), r.Stage, cli.OneLine(r.Reason))
		}
		tw.Flush()
	}
	if ro != nil {
		fmt.Fprintf(w, "\nLAST ROLL-OUT %s: %s %s → %s, %s, %d of %d moved", ro.ID, ro.Kind, buildinfo.ShortSHA(ro.From), buildinfo.ShortSHA(ro.To), ro.Phase, len(ro.Moved), len(ro.Units))
		if ro.Reason != "" {
			fmt.Fprintf(w, " (%s)", cli.OneLine(ro.Reason))
		}
		fmt.Fprintln(w)
	}
	return nil
}

func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}
