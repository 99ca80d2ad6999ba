// Package status is `lodis status`: every port as the supervisor sees it,
// or, when the supervisor is not running, as systemd reports it.
package status

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/lodis/lodis/internal/buildinfo"
	"github.com/lodis/lodis/internal/cli"
	"github.com/lodis/lodis/internal/statusapi"
	"github.com/lodis/lodis/internal/systemd"
)

// Main runs `lodis status`: the instances as the supervisor sees them, or,
// when the supervisor is not running, their unit states read from systemd
// directly (without health, version or restarts).
func Main(args []string, stderr io.Writer) int {
	return statusMain(args, os.Stdout, stderr)
}

func statusMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("lodis status", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print JSON (the supervisor's /v1/instances)")
	user := fs.Bool("user", false, "the user manager's instances")
	socket := fs.String("status-socket", "", "the supervisor's status socket (default "+statusapi.DefaultSocket+")")
	bus := fs.String("bus", "", "D-Bus address of systemd for the fallback (default as for supervise)")
	if err := cli.Parse(fs, args, "lodis status [--json] [--user] [--status-socket PATH]", stderr); err != nil {
		return cli.Exit("lodis status", err, stderr)
	}
	if *socket == "" {
		*socket = statusapi.DefaultSocket
		if *user {
			*socket = statusapi.UserSocket()
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var snap statusapi.Snapshot
	err := statusapi.NewClient(*socket).Get(ctx, "/v1/instances", &snap)
	fallback := false
	if err != nil {
		fmt.Fprintf(stderr, "lodis status: %v; reading unit states from systemd instead (no health, version or restarts: start the supervisor with 'systemctl start lodis-supervisor')\n", err)
		units, berr := readUnits(ctx, systemd.BusOptions{User: *user, Address: *bus})
		if berr != nil {
			fmt.Fprintf(stderr, "lodis status: %v\n", berr)
			return 1
		}
		snap, fallback = fromUnits(units), true
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(snap)
		return 0
	}
	printTable(stdout, snap, fallback, time.Now())
	return 0
}

func readUnits(ctx context.Context, o systemd.BusOptions) ([]systemd.UnitState, error) {
	b, err := systemd.DialUnits(o)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	return b.ListUnits(ctx, systemd.SocketPattern, systemd.WorkerPattern)
}

// fromUnits builds a snapshot from unit states alone.
func fromUnits(units []systemd.UnitState) statusapi.Snapshot {
	by := map[string]*statusapi.InstanceStatus{}
	for _, u := range units {
		port, typ, ok := systemd.ParseUnit(u.Name)
		if !ok {
			continue
		}
		st := by[port]
		if st == nil {
			st = &statusapi.InstanceStatus{Port: port, Socket: "not-loaded", Worker: "inactive/dead"}
			by[port] = st
		}
		if typ == "socket" {
			st.Socket, st.SocketResult = u.State(), u.Result
		} else {
			st.Worker, st.WorkerResult = u.State(), u.Result
			if u.ActiveState == "active" {
				st.PID = u.MainPID
				if !u.ActiveEnter.IsZero() {
					st.UptimeSeconds = time.Since(u.ActiveEnter).Seconds()
				}
			}
		}
	}
	snap := statusapi.Snapshot{Instances: []statusapi.InstanceStatus{}}
	for _, st := range by {
		snap.Instances = append(snap.Instances, *st)
	}
	sort.Slice(snap.Instances, func(i, j int) bool { return systemd.PortLess(snap.Instances[i].Port, snap.Instances[j].Port) })
	return snap
}

// printTable prints the snapshot like `systemctl list-units`.
func printTable(w io.Writer, snap statusapi.Snapshot, fallback bool, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PORT\tSOCKET\tWORKER\tPID\tVERSION\tSHA256\tUPTIME\tRESTARTS\tHEALTH")
	for _, in := range snap.Instances {
		sock, work := in.Socket, in.Worker
		if in.SocketResult != "" && in.SocketResult != "success" {
			sock += " (" + in.SocketResult + ")"
		}
		if in.WorkerResult != "" && in.WorkerResult != "success" && !strings.HasPrefix(work, "active") {
			work += " (" + in.WorkerResult + ")"
		}
		if in.WorkerUnit != "" {
			work += "(alt)" // served by lodis-alt@PORT.service, the port's second worker unit
		}
		pid, up, restarts, health := "-", "-", fmt.Sprint(in.Restarts), "-"
		if in.PID != 0 {
			pid = fmt.Sprint(in.PID)
		}
		if in.UptimeSeconds > 0 {
			up = (time.Duration(in.UptimeSeconds) * time.Second).String()
		}
		if fallback {
			restarts = "-"
		}
		if h := in.Health; h != nil {
			ago := now.Sub(h.At).Round(time.Second)
			if h.OK {
				health = fmt.Sprintf("ok %.1fms, %s ago", h.LatencyMS, ago)
			} else {
				health = fmt.Sprintf("FAILING x%d (%s), %s ago", h.Failures, cli.Clean(h.Error, 40), ago)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", in.Port, sock, work, pid, cli.Dash(cli.Clean(in.Version, 40)), cli.Dash(buildinfo.ShortSHA(in.SHA256)), up, restarts, health)
	}
	tw.Flush()
	switch {
	case fallback:
		fmt.Fprintf(w, "\n%d instances (from systemd; supervisor not running)\n", len(snap.Instances))
	case !snap.Connected:
		fmt.Fprintf(w, "\n%d instances; supervisor pid %d CANNOT REACH systemd (states may be stale)\n", len(snap.Instances), snap.PID)
	default:
		fmt.Fprintf(w, "\n%d instances; supervisor pid %d, version %s (%s), up %s\n", len(snap.Instances), snap.PID,
			snap.Version, cli.Dash(buildinfo.ShortSHA(snap.SHA256)), now.Sub(snap.Since).Round(time.Second))
	}
	if r := snap.Rollout; r != nil {
		fmt.Fprintln(w, rolloutLine(r, now))
	}
}

// rolloutLine is the roll-out line of `lodis status`, e.g.
// "roll-out 20260102T150405Z-1a2b3c4d5e6f: upgrade v1 (0a1b…) → v2 (1a2b…): rolling, moved 3/10, now lodis@8083.service".
func rolloutLine(r *statusapi.RolloutStatus, now time.Time) string {
	label := func(version, sha string) string {
		if version == "" {
			return buildinfo.ShortSHA(sha)
		}
		return cli.Clean(version, 40) + " (" + buildinfo.ShortSHA(sha) + ")"
	}
	head := "roll-out"
	if !r.Running {
		head = "last roll-out"
	}
	line := fmt.Sprintf("%s %s: %s %s → %s: %s, moved %d/%d", head, r.ID, r.Kind, label(r.FromVersion, r.From),
		label(r.ToVersion, r.To), r.Phase, r.Moved, r.Total)
	if r.Running && r.Current != "" {
		line += ", now " + r.Current
	}
	if !r.Running && !r.Finished.IsZero() {
		line += fmt.Sprintf(", ended %s ago", now.Sub(r.Finished).Round(time.Second))
	}
	if r.Reason != "" {
		line += " (" + cli.Clean(r.Reason, 120) + ")"
	}
	return line
}
