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
// health checks as an upgrade. The release must pass the signature policy
// in force now (a valid signature when a key is configured). It takes the upgrade lock, so it waits for an upgrade under way. It
// returns nil when every running worker reports the release returned to.
func (u *Upgrader) Rollback(ctx context.Context) error {
	defer u.close()
	unlock, err := u.open(ctx)
	if err != nil {
		return err
	}
	defer unlock()
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
	// To a release newer than the active one (an admin's request through
	// the supervisor, say) is an upgrade; to an older one a rollback.
	kind := rollout.KindRollback
	if a, err := u.store.Release(active); err == nil && a != nil {
		if t, err := u.store.Release(target); err == nil && t != nil && t.Imported.After(a.Imported) {
			kind = rollout.KindUpgrade
		}
	}
	st := u.rollouts().Plan(kind, active, target, time.Now())
	u.Log.WithFields(logrus.Fields{"from": buildinfo.ShortSHA(active), "to": buildinfo.ShortSHA(target)}).Info("rolling back")
	if err := u.store.CheckPolicy(target, u.PublicKey); err != nil {
		return fmt.Errorf("release %s: %w", buildinfo.ShortSHA(target), err)
	}
	if err := u.drive(ctx, st); err != nil {
		return err
	}
	u.Log.Infof("rolled out (%s): every running worker is on %s", kind, label(st.ToVersion, target))
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
