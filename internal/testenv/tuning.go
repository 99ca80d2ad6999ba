package testenv

// The drop-ins the test packages give the installed units, so that their
// suites stay lean: the shipped defaults are in the units themselves.
const (
	// FastProbing makes lodis-supervisor.service probe every 500 ms with a
	// 400 ms timeout and call a worker hung after 3 failures: about 2 s
	// (the defaults: 5 s, 2 s, 3).
	FastProbing = "[Service]\nExecStart=\nExecStart=/usr/bin/lodis supervise --probe-interval 500ms --probe-timeout 400ms --probe-failures 3\n"
	// ShortSoak makes lodis-upgrade.service soak the canary 2 s (default 5 s).
	ShortSoak = "[Service]\nExecStart=\nExecStart=/usr/bin/lodis upgrade --canary-soak 2s\n"
)

// Drop-in paths for FastProbing and ShortSoak.
const (
	SupervisorDropIn = "/etc/systemd/system/lodis-supervisor.service.d/test.conf"
	UpgradeDropIn    = "/etc/systemd/system/lodis-upgrade.service.d/test.conf"
)
