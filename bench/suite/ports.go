package suite

// The benchmark's ports, all in 18500–18599 (the other test packages use
// 18100–18499, the demo 8080–8089). The machine shares the host's network,
// so each is reached at 127.0.0.1 from the host.
const (
	portColdHardened = 18500 // lodis@, the installed (hardened) unit
	portColdPlain    = 18501 // lodis@, an unhardened instance unit
	portWarm         = 18502 // lodis@, worker kept running
	portAlwaysOn     = 18503 // lodis serve --listen, no socket activation
	portDirect       = 18504 // host: lodis exec'd with a passed socket, no systemd

	portTPLodis  = 18510 // throughput: lodis@, hardened
	portTPBare   = 18511 // throughput: bare net/http
	portTPNginx  = 18512 // throughput: nginx
	portTPPlain  = 18513 // throughput: lodis@, unhardened instance unit
	portChaosFnt = 18514 // chaos: nginx in front of the chaos cohort

	portFootprint      = 18520 // footprint: lodis ports 18520–18529
	portFootprintNginx = 18530 // footprint: nginx on 18530–18539
	portUpgradeLodis   = 18540 // upgrade: lodis ports 18540–18549
	portUpgradeNginx   = 18550 // upgrade: nginx on 18550–18559
	portChaos          = 18560 // chaos: lodis cohort 18560–18569
	portAblation       = 18570 // ablation: one port per variant, 18570–18599
	portLast           = 18599
)

// cohort is the number of ports in the footprint, upgrade and chaos stages.
const cohort = 10

// portRange returns n ports from first.
func portRange(first, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = first + i
	}
	return out
}
