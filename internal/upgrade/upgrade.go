// Package upgrade is what `lodis upgrade` and `lodis rollback` do, as root
// (the commands themselves are in internal/cmd): take the app dropped in
// incoming/, validate it, import it into the release store and roll it out
// to the running workers; or return to an earlier release.
//
// Root drives every roll-out (rollout.Runner over root's own D-Bus
// connection), and only root writes the store: the supervisor, user lodis,
// reads rollout.json to show and relay the roll-out, and holds its worker
// remedies meanwhile when asked (POST /v1/hold on its status socket).
package upgrade

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/lodis/lodis/internal/appconf"
	"github.com/lodis/lodis/internal/buildinfo"
	"github.com/lodis/lodis/internal/cli"
	"github.com/lodis/lodis/internal/logging"
	"github.com/lodis/lodis/internal/release"
	"github.com/lodis/lodis/internal/rollout"
	"github.com/lodis/lodis/internal/statusapi"
	"github.com/lodis/lodis/internal/systemd"
)

// Config is what `lodis upgrade` and `lodis rollback` are told by their flags.
type Config struct {
	Root          string        // release store; default /var/lib/lodis
	AppConf       string        // the app description; default /etc/lodis/app.conf
	Settle        time.Duration // a drop must stay unchanged this long
	MaxWait       time.Duration // give up on a drop still being written after this
	MaxSize       int64         // refuse a drop larger than this, before reading it
	PublicKey     string        // ed25519 key file; signatures required when it exists
	Sandbox       string        // "systemd" or "none"
	CheckTimeout  time.Duration // bound on the trial run's wait for a healthy answer
	CanarySoak    time.Duration
	HealthTimeout time.Duration
	Keep          int // releases kept in the store (active and previous always)
	KeepRejected  int // entries kept in rejected/
	LogLevel      string
	LogFormat     string
	To            string // rollback only: release to return to (sha256 prefix)
	// StatusSocket is the supervisor's status API, asked to hold its worker
	// remedies during a roll-out; "" asks nobody.
	StatusSocket string
}

// Flags adds the flags of `lodis upgrade`, or with rollback those of `lodis
// rollback`, to fs; parsing them sets c.
func (c *Config) Flags(fs *flag.FlagSet, rollback bool) {
	fs.StringVar(&c.Root, "root", release.DefaultRoot, "release store directory")
	fs.StringVar(&c.AppConf, "app-conf", appconf.Path, "the app description: arguments, health path, readiness, timeouts")
	fs.DurationVar(&c.CanarySoak, "canary-soak", rollout.DefaultCanarySoak, "watch the first restarted worker this long before moving the others")
	fs.DurationVar(&c.HealthTimeout, "health-timeout", rollout.DefaultHealthTimeout, "a restarted worker must run the new release and answer healthy within this")
	fs.StringVar(&c.PublicKey, "public-key", release.DefaultPublicKey, "ed25519 public key; when the file exists every release needs a valid signature (\"\" = never)")
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", "auto", "auto, text or json")
	fs.StringVar(&c.StatusSocket, "status-socket", statusapi.DefaultSocket, "the supervisor's status socket, asked to hold its worker remedies during a roll-out (\"\" = ask nobody)")
	fs.IntVar(&c.Keep, "keep", 5, "releases kept in the store, the active and the previous one included (0 = all)")
	fs.IntVar(&c.KeepRejected, "keep-rejected", 20, "refused drops and releases kept in rejected/ (-1 = all)")
	if rollback {
		fs.StringVar(&c.To, "to", "", "release to return to (sha256 or a unique prefix); default: the previous release")
		return
	}
	fs.DurationVar(&c.Settle, "settle", release.DefaultSettle, "a drop must be closed by every writer and unchanged this long before it is taken")
	fs.DurationVar(&c.MaxWait, "max-wait", 5*time.Minute, "reject a drop still being written after this long")
	fs.Int64Var(&c.MaxSize, "max-size", 1<<30, "refuse a drop larger than this many bytes, unread")
	fs.StringVar(&c.Sandbox, "sandbox", "systemd", "run the candidate's trial under: systemd (a transient socket-activated unit with the worker's sandbox) or none")
	fs.DurationVar(&c.CheckTimeout, "check-timeout", 10*time.Second, "the trial run must answer its health path within this, cold start included")
}

// Check reports the first bad setting as a one-line error.
func (c *Config) Check() error {
	switch {
	case c.Root == "":
		return errors.New("bad -root: empty")
	case c.Sandbox != "" && c.Sandbox != "systemd" && c.Sandbox != "none":
		return fmt.Errorf("bad -sandbox %q: want systemd or none", c.Sandbox)
	case c.Settle < 0:
		return fmt.Errorf("bad -settle %v: must not be negative", c.Settle)
	case c.CanarySoak < 0:
		return fmt.Errorf("bad -canary-soak %v: must not be negative", c.CanarySoak)
	case c.CheckTimeout < 0 || c.HealthTimeout < 0 || c.MaxWait < 0:
		return errors.New("bad timeout: must not be negative")
	case c.MaxSize < 0:
		return fmt.Errorf("bad -max-size %d: must not be negative", c.MaxSize)
	case c.Keep < 0 || c.Keep == 1:
		return fmt.Errorf("bad -keep %d: want 0 (all) or at least 2 (the active and the previous release)", c.Keep)
	}
	return nil
}

// Outcome is what became of one drop.
type Outcome string

// Outcomes of a drop.
const (
	Activated  Outcome = "activated"   // rolled out: every running worker is on it
	Same       Outcome = "same"        // identical to the active release: nothing to do
	Superseded Outcome = "superseded"  // valid, but a newer drop arrived meanwhile
	Rejected   Outcome = "rejected"    // refused by validation, moved to rejected/
	RolledBack Outcome = "rolled-back" // failed during its roll-out, rolled back
)

// New checks cfg and returns an Upgrader that logs to stderr as cfg says.
// The error is one line, for exit status 2.
func New(cfg Config, stderr io.Writer) (*Upgrader, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	log, err := logging.New(stderr, cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		return nil, err
	}
	return &Upgrader{Config: cfg, Log: log}, nil
}

// Upgrader is one run of `lodis upgrade` or `lodis rollback`.
type Upgrader struct {
	Config
	Log *logrus.Logger
	// Ops acts on systemd during roll-outs; default: rollout.Systemd over
	// root's own D-Bus connection, dialled on first use.
	Ops rollout.Ops
	// Trial runs candidates; default: by Sandbox (systemd: SystemdTrial
	// over root's D-Bus connection; none: DirectTrial).
	Trial release.Trial

	store   *release.Store
	intake  *release.Intake
	valid   *release.Validator
	app     appconf.Config
	bus     *systemd.Bus
	summary string // one line on what became of the last drop
}

// Upgrade is `lodis upgrade`. It takes the upgrade lock (one upgrade at a
// time; a second run waits), makes sure the store is root's alone
// (release.Store.Secure), imports the installed binary as release one if
// need be, sees to a roll-out an earlier run left unfinished, and then takes
// drops from incoming/ until none is left: each is waited for until
// complete, validated, and either rolled out or rejected. A drop that
// arrives while another is validated supersedes it (newest wins). The last
// line logged says what became of the last drop. It returns the exit
// status: 0 when that drop was rolled out, was the active release already,
// or there was none; 1 when it was rejected or rolled back.
func (u *Upgrader) Upgrade(ctx context.Context) int {
	last, err := u.Run(ctx)
	if err != nil {
		u.Log.WithError(err).Error("upgrade failed")
		return 1
	}
	log := u.Log.WithField("outcome", string(last))
	switch last {
	case "":
		return 0
	case Rejected, RolledBack:
		log.Error(u.summary)
		return 1
	}
	log.Info(u.summary)
	return 0
}

// open readies the store for a command that writes it: the upgrade lock
// (held until the returned function is called), a store root can trust,
// release one imported, the app's description, and an unfinished roll-out
// finished or rolled back.
func (u *Upgrader) open(ctx context.Context) (func(), error) {
	u.store = release.NewStore(u.Root)
	u.store.Note = func(msg string) { u.Log.Warn(msg) }
	unlock, err := u.store.LockUpgrades(ctx)
	if err != nil {
		return nil, err
	}
	notes, err := u.store.Secure()
	for _, n := range notes {
		u.Log.Warn(n)
	}
	if err == nil {
		_, err = u.store.ImportInstalled()
	}
	if err == nil {
		err = u.loadApp()
	}
	if err == nil {
		err = u.resume(ctx)
	}
	if err != nil {
		unlock()
		return nil, err
	}
	return unlock, nil
}

// loadApp reads the app description in force (the last good one when the
// file turned bad, as the workers have it).
func (u *Upgrader) loadApp() error {
	app, src, bad := appconf.Effective(u.AppConf, filepath.Join(u.Root, filepath.Base(appconf.Applied)))
	if bad != nil {
		u.Log.WithField("using", cli.Dash(src)).Warnf("%v: validating and rolling out with the app settings in force", bad)
	}
	u.app = app
	return nil
}

// close releases what the run opened.
func (u *Upgrader) close() {
	if u.bus != nil {
		u.bus.Close()
		u.bus = nil
	}
}

// units is root's own connection to systemd, dialled on first use.
func (u *Upgrader) units() (*systemd.Bus, error) {
	if u.bus == nil {
		b, err := systemd.DialUnits(systemd.BusOptions{})
		if err != nil {
			return nil, fmt.Errorf("connect to systemd: %w", err)
		}
		u.bus = b
	}
	return u.bus, nil
}

// Run processes every pending drop and returns the outcome of the last one
// ("" when there was none).
func (u *Upgrader) Run(ctx context.Context) (Outcome, error) {
	defer u.close()
	// A bad key changes nothing: it is read before anything else.
	key, err := release.LoadPublicKey(u.PublicKey)
	if err != nil {
		return "", err
	}
	unlock, err := u.open(ctx)
	if err != nil {
		return "", err
	}
	defer unlock()
	u.intake = &release.Intake{Dir: u.store.IncomingDir(), Settle: u.Settle, MaxWait: u.MaxWait, Log: u.Log}
	trial := u.Trial
	if trial == nil {
		if u.Sandbox == "none" {
			trial = release.DirectTrial{}
		} else {
			b, err := u.units()
			if err != nil {
				return "", err
			}
			trial = &release.SystemdTrial{Units: b}
		}
	}
	u.valid = &release.Validator{PublicKey: key, KeyPath: u.PublicKey, Trial: trial, App: u.app, Timeout: u.CheckTimeout}
	var last Outcome
	for n := 0; ; n++ {
		d, takeErr := u.intake.Next(ctx)
		if d == nil && takeErr == nil {
			if n == 0 {
				u.Log.WithField("dir", u.store.IncomingDir()).Info("no drop in incoming: nothing to do")
			}
			return last, nil
		}
		if d == nil {
			return last, takeErr
		}
		last = u.process(ctx, d, takeErr)
		if ctx.Err() != nil {
			return last, ctx.Err()
		}
	}
}

// resume finishes, or rolls back, a roll-out that an interrupted run left
// behind; a state file that holds no roll-out lodis wrote is quarantined
// instead (rollout.Store.Recover), and nothing is driven on its strength.
func (u *Upgrader) resume(ctx context.Context) error {
	st, err := u.rollouts().Recover(func(msg string) { u.Log.Warn(msg) })
	if err != nil || st == nil || st.Phase.Finished() {
		return err
	}
	log := u.Log.WithFields(logrus.Fields{"rollout": st.ID, "phase": st.Phase})
	log.Warn("an interrupted roll-out is pending: taking it up first")
	err = u.drive(ctx, st)
	var rb *rollout.RolledBackError
	switch {
	case errors.As(err, &rb):
		log.Warnf("the interrupted roll-out ended %s", rb.Error())
		return nil
	case err == nil:
		log.Info("the interrupted roll-out is done: every running worker is on " + buildinfo.ShortSHA(st.To))
	}
	return err
}

func (u *Upgrader) process(ctx context.Context, d *release.Drop, takeErr error) Outcome {
	log := u.Log.WithFields(logrus.Fields{"drop": d.Name, "size": d.Info.Size(), "waited": d.Waited.Round(time.Millisecond)})
	if takeErr != nil {
		return u.reject(log, d, nil, "", takeErr)
	}
	if err := release.CheckFile(d.Path); err != nil {
		return u.reject(log, d, nil, "", err)
	}
	if u.MaxSize > 0 && d.Info.Size() > u.MaxSize {
		return u.reject(log, d, nil, "", &release.Invalid{Check: "file", Err: fmt.Errorf("%d bytes, more than the %d -max-size allows", d.Info.Size(), u.MaxSize)})
	}
	c, err := u.store.StageFile(d.Path, u.MaxSize)
	if err != nil {
		return u.reject(log, d, nil, "", err)
	}
	c.Sig = d.Sig
	log = log.WithField("sha256", c.SHA256[:12])
	active, _, err := u.store.Active()
	if err != nil {
		return u.reject(log, d, c, "", err)
	}
	if c.SHA256 == active {
		log.Info("the drop is the active release already: nothing to do")
		u.store.Discard(c)
		d.Remove()
		u.summary = "the drop " + buildinfo.ShortSHA(c.SHA256) + " is the active release already: nothing changed"
		return Same
	}
	if r, _ := u.store.Release(c.SHA256); r != nil && r.Rejected != "" {
		return u.reject(log, d, c, r.Version, fmt.Errorf("rejected before, after a failed roll-out: %s", r.Rejected))
	}
	log.Info("validating the drop: file checks, then a trial run in the worker's sandbox")
	rep, err := u.valid.Validate(ctx, c, d.Sig)
	if err != nil {
		var inv *release.Invalid
		if !errors.As(err, &inv) {
			err = fmt.Errorf("validation could not run: %w", err)
		}
		return u.reject(log, d, c, "", err)
	}
	log = log.WithField("version", cli.Dash(rep.Version))
	if err := u.store.Commit(c, rep.Version, "incoming"); err != nil {
		return u.reject(log, d, c, rep.Version, err)
	}
	d.Remove()
	log.WithFields(logrus.Fields{"kind": rep.Kind, "trial": rep.Trial}).Info("drop accepted")
	if u.intake.Pending() {
		log.Info("a newer drop arrived meanwhile: it supersedes this one (kept in the store, not rolled out)")
		u.summary = "drop " + buildinfo.ShortSHA(c.SHA256) + " superseded by a newer one"
		return Superseded
	}
	st := u.rollouts().Plan(rollout.KindUpgrade, active, c.SHA256, time.Now())
	err = u.drive(ctx, st)
	name := cli.Dash(rep.Version)
	var rb *rollout.RolledBackError
	switch {
	case errors.As(err, &rb):
		u.summary = fmt.Sprintf("%s %s: %s", name, buildinfo.ShortSHA(c.SHA256), rb.Error())
		return RolledBack
	case err != nil:
		log.WithError(err).Error("roll-out interrupted")
		u.summary = fmt.Sprintf("%s %s: roll-out interrupted: %v", name, buildinfo.ShortSHA(c.SHA256), err)
		return RolledBack
	}
	u.prune(log)
	u.summary = fmt.Sprintf("rolled out: every running worker is on %s (%s)", name, buildinfo.ShortSHA(c.SHA256))
	return Activated
}

// prune keeps the store to its configured size.
func (u *Upgrader) prune(log logrus.FieldLogger) {
	removed, err := u.store.Prune(u.Keep, u.KeepRejected)
	if err != nil {
		log.WithError(err).Warn("could not prune the store")
	}
	for _, p := range removed {
		log.WithField("path", p).Info("pruned")
	}
}

func (u *Upgrader) reject(log logrus.FieldLogger, d *release.Drop, c *release.Candidate, version string, why error) Outcome {
	sha := ""
	if c != nil {
		sha = c.SHA256
		u.store.Discard(c)
	}
	path, err := u.store.Reject(d.Path, d.SigPath, sha, version, why.Error())
	if err != nil {
		log.WithError(err).Error("could not move the rejected drop")
	}
	log.WithFields(logrus.Fields{"reason": why.Error(), "moved_to": path}).Warn("drop rejected; nothing switched")
	u.summary = "drop rejected: " + cli.OneLine(why.Error())
	u.prune(log)
	return Rejected
}

// rollouts is the roll-out store beside the release store.
func (u *Upgrader) rollouts() *rollout.Store { return rollout.NewStore(u.store) }

// drive runs st to its end here, under the roll-out lock, with the
// supervisor's worker remedies held meanwhile.
func (u *Upgrader) drive(ctx context.Context, st *rollout.State) error {
	unlock, err := u.rollouts().Lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	if cur, err := u.rollouts().Load(); err == nil && cur != nil && cur.ID == st.ID {
		st = cur // an interrupted run may have moved it on
	}
	if u.Ops == nil {
		b, err := u.units()
		if err != nil {
			return err
		}
		u.Ops = &rollout.Systemd{Conn: func(context.Context) (systemd.Units, error) { return b, nil }, App: u.app, Store: u.store}
	}
	release := u.holdSupervisor(ctx, "roll-out "+st.ID)
	defer release()
	soak, timeout := u.CanarySoak, u.HealthTimeout
	if st.CanarySoak > 0 {
		soak = time.Duration(st.CanarySoak)
	}
	if st.HealthTimeout > 0 {
		timeout = time.Duration(st.HealthTimeout)
	}
	st.CanarySoak, st.HealthTimeout = rollout.Duration(soak), rollout.Duration(timeout)
	r := &rollout.Runner{Ops: u.Ops, Releases: u.store, Persist: u.rollouts(),
		CanarySoak: soak, HealthTimeout: timeout, Overlap: u.app.Overlap, Log: u.Log}
	return r.Run(ctx, st)
}
