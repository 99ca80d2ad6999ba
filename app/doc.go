// Package app turns an http.Handler into a service that lodis (or plain
// systemd) can run: it serves on the sockets systemd passes, answers the
// health check with a JSON report (version, commit, SHA-256 of the running
// binary, uptime, counters), speaks sd_notify (READY=1, STATUS=, STOPPING=1,
// WATCHDOG=1), caps the number of open connections, exits by itself when idle
// if asked to, and drains on SIGTERM without losing a request.
//
// A service of your own needs a handler and one call:
//
//	func main() {
//		mux := http.NewServeMux()
//		mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
//			io.WriteString(w, "hello\n")
//		})
//		err := app.Run(context.Background(), mux, app.Options{Name: "hello", Listen: "127.0.0.1:8080"})
//		if err != nil {
//			log.Fatal(err)
//		}
//	}
//
// Run returns nil after a clean stop (SIGTERM, SIGINT, ctx done, or idle
// exit) and an error when the service could not start or a listener failed:
// the exit status is then non-zero and systemd marks the unit failed.
//
// # What the app contract asks, and what this package does for it
//
//   - Sockets: systemd passes the port's listening socket as fd 3 with
//     LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES (the name is "http"). Serve
//     takes them through package activation. Outside systemd (LISTEN_FDS
//     unset) it binds Options.Listen instead, or fails with
//     activation.ErrNotActivated when that is empty.
//   - Health: a GET of $LODIS_HEALTH_PATH (default /__/health) must answer
//     2xx; a JSON body (a Health report) is optional and shows in lodis
//     status. Serve answers it itself with a Health report, or 503 when
//     Options.Health reports an error; every other path goes to your handler.
//   - Stop: on SIGTERM the app must drain and exit within the unit's
//     TimeoutStopSec= (15 s by default under lodis). Serve drains as package
//     activation documents, bounded by Options.DrainTimeout (10 s).
//   - Readiness: READY=1 goes out once the sockets are served. With
//     READY=health in app.conf (unit Type=exec) systemd does not wait for
//     it: the worker is ready once its health path answers.
//   - Idle exit is optional: lodis can stop an idle worker itself
//     (IDLE_TIMEOUT= in app.conf); Options.IdleTimeout lets the app decide.
package app
