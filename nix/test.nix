# test.nix is the NixOS VM test of services.lodis: it boots a NixOS machine
# with the module and checks, as an operator would: the sockets listen, no
# worker runs before the first request, a request is answered and starts the
# worker, the supervisor is active, polkit lets user lodis (the supervisor's)
# restart lodis units and no other, an idle worker exits while its port
# keeps listening, and /etc/lodis/app.conf is good and lodis-generator made
# both worker templates' drop-ins of it (idleTimeout is in APP_ARGS=).
#
# It needs real Nix with KVM (nix flake check, or nix build .#checks.<system>.vm);
# CI here does not run it.
{ pkgs, module }:

pkgs.testers.runNixOSTest {
  name = "lodis";

  nodes.machine = { pkgs, ... }: {
    imports = [ module ];
    services.lodis = {
      enable = true;
      ports = [ 8080 8081 ];
      idleTimeout = "3s";
    };
    environment.systemPackages = [ pkgs.curl ];
  };

  testScript = ''
    import json

    machine.wait_for_unit("sockets.target")

    # Listening is read from the kernel: connecting would start a worker.
    for port in (8080, 8081):
        machine.wait_until_succeeds(f"ss -Hltn 'sport = :{port}' | grep -q LISTEN")
        machine.succeed(f"systemctl is-active lodis@{port}.socket")

    with subtest("app.conf is good and the generator made both workers' drop-ins"):
        machine.succeed("lodis config check")
        for template in ("lodis@.service", "lodis-alt@.service"):
            machine.succeed(f"grep -q -- '--idle-timeout' /run/systemd/generator/{template}.d/50-app.conf")
        assert "--idle-timeout" in machine.succeed("systemctl show -p ExecStart lodis@8080.service")

    with subtest("no worker before the first request"):
        machine.fail("systemctl is-active lodis@8080.service")

    with subtest("a request is answered and starts the worker"):
        health = json.loads(machine.succeed("curl -sf http://127.0.0.1:8080/__/health"))
        assert health["status"] == "ok", health
        assert health["port"] == "8080", health
        machine.succeed("systemctl is-active lodis@8080.service")
        assert machine.succeed("readlink /var/lib/lodis/current").strip().endswith("/bin/lodis")

    with subtest("the supervisor is active"):
        machine.wait_for_unit("lodis-supervisor.service")

    with subtest("polkit lets user lodis act on lodis units, and on no other"):
        machine.wait_for_unit("polkit.service")
        machine.succeed("test -f /run/current-system/sw/share/polkit-1/rules.d/50-lodis.rules")
        machine.succeed("runuser -u lodis -- systemctl --no-ask-password restart lodis@8081.socket")
        machine.fail("runuser -u lodis -- systemctl --no-ask-password restart systemd-journald.service")

    with subtest("an idle worker exits and its port keeps listening"):
        machine.wait_until_fails("systemctl is-active lodis@8080.service", timeout=30)
        machine.succeed("ss -Hltn 'sport = :8080' | grep -q LISTEN")
        machine.succeed("curl -sf http://127.0.0.1:8080/")
  '';
}
