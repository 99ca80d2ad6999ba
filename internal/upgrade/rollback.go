package upgrade

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/lodis/lodis/internal/buildinfo"
	"github.com/lodis/lodis/internal/release"
	"github.com/lodis/lodis/internal/rollout"
)

// Rollback is `lodis rollback`: it returns every running worker to the
// previous release (or to u.To), one at a time, with the same canary and
// health checks as an upgrade — driven by the supervisor, or here when none
// runs. It takes the upgrade lock, so it waits for an upgrade under way. It
// returns nil when every running worker reports the release returned to.
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
	st := u.rollouts().Plan(rollout.KindRollback, active, target, time.Now())
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

func label(version, sha string) string {
	if version == "" {
		return buildinfo.ShortSHA(sha)
	}
	return version + " (" + buildinfo.ShortSHA(sha) + ")"
}
