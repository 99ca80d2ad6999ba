// Package health is the health contract between a worker and the rest of
// lodis: the path a worker answers on, the JSON it answers with (Report), and
// the one client (Client) that the supervisor's probes and the roll-out's
// checks both use. The client dials the address the socket really listens
// on, as systemd reports it, never a guess.
package health

import "github.com/lodis/lodis/app"

// Path is where a worker answers its health check unless app.conf's
// HEALTH_PATH= says otherwise.
const Path = app.DefaultHealthPath

// Report is the JSON body of a worker's health answer, defined once, in the
// public package app. `lodis serve` fills every field; a reader relies on
// none being present except where it says so (the supervisor needs PID, a
// roll-out needs SHA256).
type Report = app.Health
