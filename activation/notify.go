package activation

import (
	"sync"

	"log/slog"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Notifier sends sd_notify(3) state lines ("READY=1", "STATUS=…") to the
// service manager.
type Notifier interface {
	Notify(state string) error
}

// SystemdNotifier sends to $NOTIFY_SOCKET with go-systemd's daemon.SdNotify.
// Without $NOTIFY_SOCKET (not run by systemd, or a unit that is not
// Type=notify) every call does nothing. A failed send is logged once, not per
// call, so a broken socket cannot flood the log.
type SystemdNotifier struct {
	Log  *slog.Logger // nil: failures are not logged
	once sync.Once
}

// Notify implements Notifier.
func (n *SystemdNotifier) Notify(state string) error {
	_, err := daemon.SdNotify(false, state)
	if err != nil && n.Log != nil {
		n.once.Do(func() { n.Log.Warn("sd_notify failed; further failures are not logged", "error", err) })
	}
	return err
}
