// Package upgrade is what `lodis upgrade` and `lodis rollback` do (the
// commands themselves are in internal/cmd): take the binary dropped in
// incoming/, validate it, import it into the release store and have it
// rolled out; or return to an earlier release.
//
// The roll-out itself is the supervisor's (rollout.Service): an Upgrader
// hands it over on the status socket and waits for its outcome
// (rollout.Client). When no supervisor answers there, it drives the roll-out
// itself (rollout.Runner over its own D-Bus connection), as the log says.
package upgrade

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/lodis/lodis/internal/buildinfo"
	"github.com/lodis/lodis/internal/cli"
	"github.com/lodis/lodis/internal/logging"
	"github.com/lodis/lodis/internal/release"
	"github.com/lodis/lodis/internal/rollout"
	"github.com/lodis/lodis/internal/statusapi"
)

// Config is what `lodis upgrade` and `lodis rollback` are told by their flags.
type Config struct {
	Root          string        // release store; default /var/lib/lodis
	Settle        time.Duration // a drop must stay unchanged this long
	MaxWait       time.Duration // give up on a drop still being written after this
	PublicKey     string        // ed25519 key file; signatures required when it exists
	Sandbox       string        // "systemd" or "none"
	CheckTimeout  time.Duration // bound on each sandboxed run of the candidate
	CanarySoak    time.Duration
	HealthTimeout time.Duration
	LogLevel      string
	LogFormat     string
	To            string // rollback only: release to return to (sha256 prefix)
	// StatusSocket is the supervisor's status API, to which roll-outs are
	// handed over; "" drives them here always.
	StatusSocket string
	// TakeOverAfter is how long the supervisor may stay unreachable during
	// a roll-out it drives before the command takes the roll-out over;
	// default 30 s.
	TakeOverAfter time.Duration
}

// Flags adds the flags of `lodis upgrade`, or with rollback those of `lodis
// rollback`, to fs; parsing them sets c.
func (c *Config) Flags(fs *flag.FlagSet, rollback bool) {
	fs.StringVar(&c.Root, "root", release.DefaultRoot, "release store directory")
	fs.DurationVar(&c.CanarySoak, "canary-soak", 5*time.Second, "watch the first restarted worker this long before moving the others")
	fs.DurationVar(&c.HealthTimeout, "health-timeout", 15*time.Second, "a restarted worker must report the new release within this")
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", "auto", "auto, text or json")
	fs.StringVar(&c.StatusSocket, "status-socket", statusapi.DefaultSocket, "the supervisor's status socket: roll-outs are handed to it; when nothing answers there they are driven here (\"\" = always here)")
	if rollback {
		fs.StringVar(&c.To, "to", "", "release to return to (sha256 or a unique prefix); default: the previous release")
		return
	}
	fs.DurationVar(&c.Settle, "settle", time.Second, "a drop must be closed by every writer and unchanged this long before it is taken")
	fs.DurationVar(&c.MaxWait, "max-wait", 5*time.Minute, "reject a drop still being written after this long")
	fs.StringVar(&c.PublicKey, "public-key", release.DefaultPublicKey, "ed25519 public key; when the file exists every drop needs a valid lodis.sig (\"\" = never)")
	fs.StringVar(&c.Sandbox, "sandbox", "systemd", "run the candidate's version and selftest under: systemd (systemd-run with the worker's hardening) or none")
	fs.DurationVar(&c.CheckTimeout, "check-timeout", 10*time.Second, "bound on each run of the candidate during validation")
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

// Upgrade is `lodis upgrade`. It takes the upgrade lock (one upgrade at a
// time; a second run waits), imports the installed binary as release one if
// need be, sees to a roll-out an earlier run left unfinished, and then takes
// drops from incoming/ until none is left: each is waited for until
// complete, validated, and either rolled out — by the supervisor, or here
// when none runs — or rejected. A drop that arrives while another is
// validated supersedes it (newest wins). The last line logged says what
// became of the last drop. It returns the exit status: 0 when that drop was
// rolled out, was the active release already, or there was none; 1 when it
// was rejected or rolled back.
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

// Upgrader is one run of `lodis upgrade`.
type Upgrader struct {
	Config
	Log *logrus.Logger
	// Ops acts on systemd during roll-outs; default: rollout.DialSystemd on first use.
	Ops rollout.Ops

	store   *release.Store
	intake  *release.Intake
	valid   *release.Validator
	closer  func()
	summary string // one line on what became of the last drop
}

// Run processes every pending drop and returns the outcome of the last one
// ("" when there was none).
func (u *Upgrader) Run(ctx context.Context) (Outcome, error) {
	u.store = release.NewStore(u.Root)
	u.intake = &release.Intake{Dir: u.store.IncomingDir(), Settle: u.Settle, MaxWait: u.MaxWait, Log: u.Log}
	key, err := release.LoadPublicKey(u.PublicKey)
	if err != nil {
		return "", err
	}
	var sb release.Sandbox = &release.SystemdRun{}
	if u.Sandbox == "none" {
		sb = release.Direct{}
	}
	u.valid = &release.Validator{PublicKey: key, KeyPath: u.PublicKey, Sandbox: sb, Timeout: u.CheckTimeout}
	defer func() {
		if u.closer != nil {
			u.closer()
		}
	}()

	unlock, err := u.store.LockUpgrades(ctx)
	if err != nil {
		return "", err
	}
	defer unlock()
	u.store.AdoptReleases()
	if _, err := u.store.ImportInstalled(); err != nil {
		return "", err
	}
	if err := u.resume(ctx); err != nil {
		return "", err
	}
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

// resume sees to a roll-out that an interrupted run left behind: the
// supervisor takes such a roll-out up by itself, so when it answers this
// waits for it; otherwise the roll-out is finished (or rolled back) here.
func (u *Upgrader) resume(ctx context.Context) error {
	st, err := u.rollouts().Load()
	if err != nil || st == nil || st.Phase.Finished() {
		return err
	}
	log := u.Log.WithFields(logrus.Fields{"rollout": st.ID, "phase": st.Phase})
	if u.StatusSocket != "" {
		var cur *rollout.State
		if err := statusapi.NewClient(u.StatusSocket).Get(ctx, "/v1/rollout", &cur); err == nil {
			log.Warn("an interrupted roll-out is pending: the supervisor takes it up; waiting for it")
			err = u.client().Follow(ctx, st.ID)
			var rb *rollout.RolledBackError
			if errors.As(err, &rb) {
				return nil
			}
			return err
		}
	}
	log.Warn("an interrupted roll-out is pending: taking it up first")
	err = u.drive(ctx, st)
	var rb *rollout.RolledBackError
	if errors.As(err, &rb) {
		return nil
	}
	return err
}

func (u *Upgrader) process(ctx context.Context, d *release.Drop, takeErr error) Outcome {
	log := u.Log.WithFields(logrus.Fields{"size": d.Info.Size(), "waited": d.Waited.Round(time.Millisecond)})
	if takeErr != nil {
		return u.reject(log, d, nil, "", takeErr)
	}
	if !d.Info.Mode().IsRegular() {
		return u.reject(log, d, nil, "", release.CheckFile(d.Path))
	}
	f, err := os.Open(d.Path)
	if err != nil {
		return u.reject(log, d, nil, "", err)
	}
	c, err := u.store.Stage(f)
	f.Close()
	if err != nil {
		return u.reject(log, d, nil, "", fmt.Errorf("could not be copied into the store: %w", err))
	}
	log = log.WithField("sha256", c.SHA256[:12])
	if err := release.CheckFile(d.Path); err != nil {
		return u.reject(log, d, c, "", err)
	}
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
	log.Info("validating the drop")
	rep, err := u.valid.Validate(ctx, c, d.Sig)
	if err != nil {
		var inv *release.Invalid
		if !errors.As(err, &inv) {
			err = fmt.Errorf("validation could not run: %w", err)
		}
		return u.reject(log, d, c, "", err)
	}
	log = log.WithField("version", rep.Version)
	if err := u.store.Commit(c, rep.Version, "incoming"); err != nil {
		return u.reject(log, d, c, rep.Version, err)
	}
	d.Remove()
	log.WithField("selftest", rep.Selftest).Info("drop accepted")
	if u.intake.Pending() {
		log.Info("a newer drop arrived meanwhile: it supersedes this one (kept in the store, not rolled out)")
		u.summary = "drop " + buildinfo.ShortSHA(c.SHA256) + " superseded by a newer one"
		return Superseded
	}
	st := u.rollouts().Plan(rollout.KindUpgrade, active, c.SHA256, time.Now())
	err = u.rollOut(ctx, st)
	var rb *rollout.RolledBackError
	switch {
	case errors.As(err, &rb):
		u.summary = fmt.Sprintf("%s %s: %s", rep.Version, buildinfo.ShortSHA(c.SHA256), rb.Error())
		return RolledBack
	case err != nil:
		log.WithError(err).Error("roll-out interrupted")
		u.summary = fmt.Sprintf("%s %s: roll-out interrupted: %v", rep.Version, buildinfo.ShortSHA(c.SHA256), err)
		return RolledBack
	}
	u.summary = fmt.Sprintf("rolled out: every running worker is on %s (%s)", rep.Version, buildinfo.ShortSHA(c.SHA256))
	return Activated
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
	return Rejected
}

// runRollout drives st to its end here, in this process; the caller holds
// the roll-out lock (see drive).
func (u *Upgrader) runRollout(ctx context.Context, st *rollout.State) error {
	if u.Ops == nil {
		s, err := rollout.DialSystemd()
		if err != nil {
			return err
		}
		u.Ops, u.closer = s, s.Close
	}
	r := &rollout.Runner{
		Ops: u.Ops, Releases: u.store, Persist: u.rollouts(),
		CanarySoak: u.CanarySoak, HealthTimeout: u.HealthTimeout, Log: u.Log,
	}
	return r.Run(ctx, st)
}

// rollouts is the roll-out store beside the release store.
func (u *Upgrader) rollouts() *rollout.Store { return rollout.NewStore(u.store) }

// client hands roll-outs to the supervisor; one it stopped driving is
// driven here.
func (u *Upgrader) client() *rollout.Client {
	return &rollout.Client{Socket: u.StatusSocket, Store: u.rollouts(), Log: u.Log,
		TakeOverAfter: u.TakeOverAfter, Drive: u.runRollout}
}

// rollOut moves every running worker to st.To: it hands the roll-out to
// the supervisor and waits for its outcome, or, when no supervisor takes
// it, drives it here and says so in the log. The error is a
// *rollout.RolledBackError when the roll-out was rolled back.
func (u *Upgrader) rollOut(ctx context.Context, st *rollout.State) error {
	if u.StatusSocket != "" {
		req := rollout.Request{Kind: st.Kind, SHA256: st.To, CanarySoak: rollout.Duration(u.CanarySoak),
			HealthTimeout: rollout.Duration(u.HealthTimeout)}
		err := u.client().HandOver(ctx, st, req)
		var no *rollout.NoSupervisorError
		if !errors.As(err, &no) {
			return err
		}
		u.Log.WithField("why", no.Why).Warn("no supervisor drives roll-outs here: driving the roll-out in this process")
	}
	return u.drive(ctx, st)
}

// drive runs st here, under the roll-out lock (a supervisor that starts
// meanwhile waits for it before it takes anything up).
func (u *Upgrader) drive(ctx context.Context, st *rollout.State) error {
	unlock, err := u.rollouts().Lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	if cur, err := u.rollouts().Load(); err == nil && cur != nil && cur.ID == st.ID {
		st = cur // whoever held the lock may have moved it on
	}
	return u.runRollout(ctx, st)
}
