package nixos

import "fmt"

// badInput is a setting of services.lodis that must fail the evaluation,
// and what the error must say.
type badInput struct {
	name     string
	settings map[string]any
	want     []string
}

// notOfType is how nixpkgs' lib words a value of the wrong type.
func notOfType(option, description string) string {
	return "A definition for option `" + option + "' is not of type `" + description + "'"
}

// entry names entry m of definition 1 of a list option, as the real lib does.
func entry(option string, m int) string {
	return option + `."[definition 1-entry ` + fmt.Sprint(m) + `]"`
}

const (
	portType     = "integer between 1 and 65535 (both inclusive)"
	addressType  = "null or IPv4 or IPv6 address (no brackets, no port)"
	durationType = "null or duration such as 30s, 5m or 1h30m (a Go duration)"
	hostType     = "host name or IP address (no brackets, no port)"
	// metricsAddressType is metrics.listenAddress's: an address, not null.
	metricsAddressType = "IPv4 or IPv6 address (no brackets, no port)"

	// The app's settings.
	appArgType       = "string without control characters (newline, tab), with % only in a specifier such as %i or %%"
	healthPathType   = "null or absolute URL path such as /healthz (no query, fragment, %, quotes, backslash or space)"
	envFileType      = "null or absolute path, as a string (a Nix path would copy the file into the store), without spaces, quotes, backslash, % or $"
	readyType        = `null or one of "notify", "health"`
	healthTimeoutTyp = "null or duration from 1ms to 5m, such as 2s or 500ms (a Go duration)"
	stopTimeoutType  = "null or duration from 1s to 1h, such as 15s or 1m30s (a Go duration)"
	appIdleType      = "null or duration from 1s to 24h, such as 5m, or 0 for none (a Go duration)"
	programType      = "null or absolute path of an executable (no spaces, quotes, backslash or %)"
)

// app is a services.lodis setting of app.*.
func app(settings map[string]any) map[string]any {
	return map[string]any{"app": settings}
}

// badInputs are the bad settings, with the errors of nixpkgs' real lib
// (TestNixOSRejectsBadInput); the stub lib words them alike
// (TestModuleRejectsBadInput). A fresh table each call: the tests add
// enable = true to the settings.
func badInputs() []badInput {
	return []badInput{
		{"port zero", map[string]any{"ports": []int{0}}, []string{notOfType(entry("services.lodis.ports", 1), portType)}},
		{"port too large", map[string]any{"ports": []int{65536}}, []string{notOfType(entry("services.lodis.ports", 1), portType)}},
		{"port negative", map[string]any{"ports": []int{18540, -1}}, []string{notOfType(entry("services.lodis.ports", 2), portType)}},
		{"port not a number", map[string]any{"ports": []any{"x"}}, []string{notOfType(entry("services.lodis.ports", 1), portType)}},
		{"ports not a list", map[string]any{"ports": 18540}, []string{notOfType("services.lodis.ports", "list of "+portType)}},
		{"port twice", map[string]any{"ports": []int{18540, 18541, 18540}}, []string{"Failed assertions:", "- services.lodis.ports lists a port more than once: [18540] in [18540,18541,18540]"}},
		{"address not a string", map[string]any{"listenAddress": 5}, []string{notOfType("services.lodis.listenAddress", addressType)}},
		{"address with a port", map[string]any{"listenAddress": "127.0.0.1:80"}, []string{notOfType("services.lodis.listenAddress", addressType)}},
		{"address in brackets", map[string]any{"listenAddress": "[::1]"}, []string{notOfType("services.lodis.listenAddress", addressType)}},
		{"address a name", map[string]any{"listenAddress": "localhost"}, []string{notOfType("services.lodis.listenAddress", addressType)}},
		{"address out of range", map[string]any{"listenAddress": "256.0.0.1"}, []string{notOfType("services.lodis.listenAddress", addressType)}},
		{"idle timeout not a duration", map[string]any{"idleTimeout": "soon"}, []string{notOfType("services.lodis.idleTimeout", durationType)}},
		{"idle timeout with a space", map[string]any{"idleTimeout": "5 m"}, []string{notOfType("services.lodis.idleTimeout", durationType)}},
		{"idle timeout a number", map[string]any{"idleTimeout": 30}, []string{notOfType("services.lodis.idleTimeout", durationType)}},
		{"argument with a space", map[string]any{"extraArgs": []string{"--log-level debug"}}, []string{notOfType(entry("services.lodis.extraArgs", 1), "string matching the pattern [A-Za-z0-9_./:=,+@-]+")}},
		{"unknown option", map[string]any{"prots": []int{1}}, []string{"The option `services.lodis.prots' does not exist"}},
		{"upstream host with a port", map[string]any{"nginx": map[string]any{"enable": true, "upstreamHosts": []string{"10.0.0.2:8080"}}}, []string{notOfType(entry("services.lodis.nginx.upstreamHosts", 1), hostType)}},
		{"upstream host a URL", map[string]any{"nginx": map[string]any{"enable": true, "upstreamHosts": []string{"10.0.0.2", "http://web2"}}}, []string{notOfType(entry("services.lodis.nginx.upstreamHosts", 2), hostType)}},
		{"upstream hosts not a list", map[string]any{"nginx": map[string]any{"enable": true, "upstreamHosts": "10.0.0.2"}}, []string{notOfType("services.lodis.nginx.upstreamHosts", "list of "+hostType)}},
		{"metrics port zero", map[string]any{"metrics": map[string]any{"enable": true, "port": 0}}, []string{notOfType("services.lodis.metrics.port", portType)}},
		{"metrics port too large", map[string]any{"metrics": map[string]any{"enable": true, "port": 70000}}, []string{notOfType("services.lodis.metrics.port", portType)}},
		{"metrics address a name", map[string]any{"metrics": map[string]any{"enable": true, "listenAddress": "localhost"}}, []string{notOfType("services.lodis.metrics.listenAddress", metricsAddressType)}},
		{"metrics address with a port", map[string]any{"metrics": map[string]any{"enable": true, "listenAddress": "127.0.0.1:9187"}}, []string{notOfType("services.lodis.metrics.listenAddress", metricsAddressType)}},
		{"metrics address null", map[string]any{"metrics": map[string]any{"enable": true, "listenAddress": nil}}, []string{notOfType("services.lodis.metrics.listenAddress", metricsAddressType)}},
		{"metrics unknown option", map[string]any{"metrics": map[string]any{"enable": true, "address": "::"}}, []string{"The option `services.lodis.metrics.address' does not exist"}},
		{"upstream host twice", map[string]any{"nginx": map[string]any{"enable": true, "upstreamHosts": []string{"10.0.0.2", "10.0.0.3", "10.0.0.2"}}}, []string{"Failed assertions:", `- services.lodis.nginx.upstreamHosts lists a host more than once: ["10.0.0.2"]`}},
		{"app argument with a newline", app(map[string]any{"args": []string{"serve", "--title", "a\nb"}}), []string{notOfType(entry("services.lodis.app.args", 3), appArgType)}},
		{"app argument with a tab", app(map[string]any{"args": []string{"a\tb"}}), []string{notOfType(entry("services.lodis.app.args", 1), appArgType)}},
		{"app argument with a lone %", app(map[string]any{"args": []string{"--share", "100%"}}), []string{notOfType(entry("services.lodis.app.args", 2), appArgType)}},
		{"app arguments not a list", app(map[string]any{"args": "serve --port %i"}), []string{notOfType("services.lodis.app.args", "list of "+appArgType)}},
		{"app environment file relative", app(map[string]any{"environmentFile": "secrets/app.env"}), []string{notOfType("services.lodis.app.environmentFile", envFileType)}},
		{"app environment file with a space", app(map[string]any{"environmentFile": "/run/my secrets/app.env"}), []string{notOfType("services.lodis.app.environmentFile", envFileType)}},
		{"app ready maybe", app(map[string]any{"ready": "maybe"}), []string{notOfType("services.lodis.app.ready", readyType)}},
		{"app health path without a slash", app(map[string]any{"healthPath": "healthz"}), []string{notOfType("services.lodis.app.healthPath", healthPathType)}},
		{"app health path with a query", app(map[string]any{"healthPath": "/health?full=1"}), []string{notOfType("services.lodis.app.healthPath", healthPathType)}},
		{"app health path empty", app(map[string]any{"healthPath": ""}), []string{notOfType("services.lodis.app.healthPath", healthPathType)}},
		{"app health timeout too long", app(map[string]any{"healthTimeout": "10m"}), []string{notOfType("services.lodis.app.healthTimeout", healthTimeoutTyp)}},
		{"app health timeout too short", app(map[string]any{"healthTimeout": "500us"}), []string{notOfType("services.lodis.app.healthTimeout", healthTimeoutTyp)}},
		{"app health timeout not a duration", app(map[string]any{"healthTimeout": "2 seconds"}), []string{notOfType("services.lodis.app.healthTimeout", healthTimeoutTyp)}},
		{"app stop timeout zero", app(map[string]any{"stopTimeout": "0"}), []string{notOfType("services.lodis.app.stopTimeout", stopTimeoutType)}},
		{"app stop timeout over an hour", app(map[string]any{"stopTimeout": "1h0m1s"}), []string{notOfType("services.lodis.app.stopTimeout", stopTimeoutType)}},
		{"app idle timeout 0s", app(map[string]any{"idleTimeout": "0s"}), []string{notOfType("services.lodis.app.idleTimeout", appIdleType)}},
		{"app idle timeout over a day", app(map[string]any{"idleTimeout": "25h"}), []string{notOfType("services.lodis.app.idleTimeout", appIdleType)}},
		{"app state dir a string", app(map[string]any{"stateDir": "yes"}), []string{notOfType("services.lodis.app.stateDir", "null or boolean")}},
		{"app overlap a string", app(map[string]any{"overlap": "no"}), []string{notOfType("services.lodis.app.overlap", "null or boolean")}},
		{"app program relative", app(map[string]any{"program": "bin/app"}), []string{notOfType("services.lodis.app.program", programType)}},
		{"app program with a %", app(map[string]any{"program": "/opt/app%i/bin/app"}), []string{notOfType("services.lodis.app.program", programType)}},
		{"unknown app option", app(map[string]any{"helthPath": "/healthz"}), []string{"The option `services.lodis.app.helthPath' does not exist"}},
		{"serve arguments with an app", map[string]any{"idleTimeout": "45s", "app": map[string]any{"program": "/opt/app/bin/app"}}, []string{"Failed assertions:", "- services.lodis.idleTimeout and services.lodis.extraArgs are arguments of lodis serve, the default app, but services.lodis.app.program is /opt/app/bin/app: put your app's arguments in services.lodis.app.args"}},
		{"no arguments for lodis", app(map[string]any{"args": []string{}}), []string{"Failed assertions:", `- services.lodis.app.args is empty, but the default app, the lodis binary, needs its subcommand: [ "serve" "--port" "%i" ] (or set services.lodis.app.package for an app of your own)`}},
		{"extra arguments with an app", map[string]any{"extraArgs": []string{"--log-level", "debug"}, "app": map[string]any{"program": "/opt/app/bin/app"}}, []string{"Failed assertions:", "- services.lodis.idleTimeout and services.lodis.extraArgs are arguments of lodis serve"}},
	}
}
