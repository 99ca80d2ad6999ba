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
)

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
		{"upstream host twice", map[string]any{"nginx": map[string]any{"enable": true, "upstreamHosts": []string{"10.0.0.2", "10.0.0.3", "10.0.0.2"}}}, []string{"Failed assertions:", `- services.lodis.nginx.upstreamHosts lists a host more than once: ["10.0.0.2"]`}},
	}
}
