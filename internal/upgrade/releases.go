package upgrade

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/lodis/lodis/internal/buildinfo"
	"github.com/lodis/lodis/internal/cli"
	"github.com/lodis/lodis/release"
	"github.com/lodis/lodis/rollout"
)

// Releases is `lodis releases`: every release in the store (active, previous,
// available, rejected with its reason), the rejected drops, and the last
// roll-out. It only reads. -json prints the same as one JSON object.
func Releases(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("lodis releases", flag.ContinueOnError)
	root := fs.String("root", release.DefaultRoot, "release store directory")
	asJSON := fs.Bool("json", false, "print JSON")
	if code := parse(fs, args, stderr); code != nil {
		return *code
	}
	if err := printReleases(os.Stdout, *root, *asJSON); err != nil {
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

func printReleases(w io.Writer, root string, asJSON bool) error {
	s := release.NewStore(root)
	l, err := s.List()
	if err != nil {
		return err
	}
	ro, err := (&rollout.FileStore{Path: root + "/rollout.json"}).Load()
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
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", buildinfo.ShortSHA(e.SHA256), cli.Dash(e.Version), e.State, when(since), oneLine(e.Reason))
	}
	tw.Flush()
	if len(l.Rejected) > 0 {
		fmt.Fprintln(w, "\nREJECTED (newest first)")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "WHEN\tRELEASE\tSTAGE\tREASON")
		for _, r := range l.Rejected {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", when(r.Time), cli.Dash(buildinfo.ShortSHA(r.SHA256)), r.Stage, oneLine(r.Reason))
		}
		tw.Flush()
	}
	if ro != nil {
		fmt.Fprintf(w, "\nLAST ROLL-OUT %s: %s %s → %s, %s, %d of %d moved", ro.ID, ro.Kind, buildinfo.ShortSHA(ro.From), buildinfo.ShortSHA(ro.To), ro.Phase, len(ro.Moved), len(ro.Units))
		if ro.Reason != "" {
			fmt.Fprintf(w, " (%s)", oneLine(ro.Reason))
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

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }

func label(version, sha string) string {
	if version == "" {
		return buildinfo.ShortSHA(sha)
	}
	return version + " (" + buildinfo.ShortSHA(sha) + ")"
}

// Rollback is `lodis rollback`: return every running worker to the previous
// release (or to -to), one at a time, with the same canary and health checks
// as an upgrade — driven by the supervisor, or here when none runs. It runs
// as root or as user lodis, and takes the upgrade lock, so it waits for an
// upgrade under way. The exit status is 0 when every running worker reports the release
// returned to, 1 otherwise (the roll-back itself was rolled back).
func Rollback(args []string, stderr io.Writer) int {
	u, code := setup("lodis rollback", args, stderr, true)
	if u == nil {
		return code
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := u.Rollback(ctx); err != nil {
		fmt.Fprintf(stderr, "lodis rollback: %v\n", err)
		return 1
	}
	return 0
}

// Rollback returns to the previous release (or u.To).
func (u *Upgrader) Rollback(ctx context.Context) error {
	u.store = release.NewStore(u.Root)
	defer func() {
		if u.closer != nil {
			u.closer()
		}
	}()
	unlock, err := u.store.LockUpgrades(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	u.store.AdoptReleases()
	if _, err := u.store.ImportInstalled(); err != nil {
		return err
	}
	if err := u.resume(ctx); err != nil {
		return err
	}
	active, _, err := u.store.Active()
	if err != nil {
		return err
	}
	target, err := u.rollbackTarget()
	if err != nil {
		return err
	}
	if target == active {
		return fmt.Errorf("release %s is already active", buildinfo.ShortSHA(target))
	}
	st := rollout.NewState(rollout.KindRollback, active, target, time.Now())
	if r, _ := u.store.Release(active); r != nil {
		st.FromVersion = r.Version
	}
	if r, _ := u.store.Release(target); r != nil {
		st.ToVersion = r.Version
	}
	u.Log.WithFields(logrus.Fields{"from": buildinfo.ShortSHA(active), "to": buildinfo.ShortSHA(target)}).Info("rolling back")
	if err := u.rollOut(ctx, st); err != nil {
		return err
	}
	u.Log.Infof("rolled back: every running worker is on %s", label(st.ToVersion, target))
	return nil
}

func (u *Upgrader) rollbackTarget() (string, error) {
	l, err := u.store.List()
	if err != nil {
		return "", err
	}
	if u.To == "" {
		if l.Previous == "" {
			return "", errors.New("no previous release to return to (see 'lodis releases')")
		}
		if !u.store.Has(l.Previous) {
			return "", fmt.Errorf("previous release %s is no longer in the store", buildinfo.ShortSHA(l.Previous))
		}
		return l.Previous, nil
	}
	var found []release.Entry
	for _, e := range l.Releases {
		if strings.HasPrefix(e.SHA256, strings.ToLower(u.To)) {
			found = append(found, e)
		}
	}
	switch {
	case len(found) == 0:
		return "", fmt.Errorf("bad -to %q: no release in the store starts with it (see 'lodis releases')", u.To)
	case len(found) > 1:
		return "", fmt.Errorf("bad -to %q: %d releases start with it; give more digits", u.To, len(found))
	case found[0].State == "rejected":
		return "", fmt.Errorf("bad -to %q: release %s was rejected: %s", u.To, buildinfo.ShortSHA(found[0].SHA256), found[0].Reason)
	}
	return found[0].SHA256, nil
}
