# eval-nixos.nix evaluates nix/module.nix in a real NixOS evaluation:
# nixpkgs' nixos/lib/eval-config.nix with the full module list and nixpkgs'
# lib, but the package set of nix/stand-in-pkgs.nix, since pkgs/ is not
# needed to evaluate a configuration. It returns, for each machine, what the
# module system made of lodis: the units with their text, polkit, the system
# packages, the firewall, nginx, the lodis user, and the warnings. The
# assertions are NixOS's own: forcing system.build.toplevel raises
# "Failed assertions: ..." as nixos-rebuild would.
#
#   nix-instantiate --eval --strict --json --store dummy:// nix/eval-nixos.nix \
#     --argstr nixpkgs "$PWD/../shared/nixpkgs" --argstr package /path/of/a/lodis/install \
#     --argstr config '{"services":{"lodis":{"enable":true}}}'
#
# config is one machine (named "machine"), given as JSON and evaluated with
# boot.isContainer = true (no boot loader, no file systems to declare). hive
# is instead the path of a colmena hive (nix/hive.nix is how one is
# evaluated; it may ask for `pkgs` and `lodis`, this source tree); each of
# its nodes is evaluated as it is. nixpkgs is the absolute path of the tree
# holding lib/ and nixos/; package is the out path that stands for the lodis
# package (test/nixos lays one out with make install); names are more
# packages for the stand-in set, to try a configuration that asks for one
# it lacks.
{ nixpkgs
, config ? "{}"
, hive ? null
, package ? "/nix/store/lodis-package-stand-in"
, names ? [ ]
}:

let
  lib = import (nixpkgs + "/lib");
  system = "x86_64-linux";

  lodisPackage = {
    type = "derivation";
    name = "lodis";
    pname = "lodis";
    version = "0";
    outPath = package;
    meta.mainProgram = "lodis";
  };
  pkgs = import ./stand-in-pkgs.nix {
    inherit lib nixpkgs system names;
    package = lodisPackage;
  };

  # The snapshot has no nixos/doc: NixOS's own manual cannot be built, so
  # it is left out of every machine unless the machine asks for it.
  noManual = { documentation.nixos.enable = lib.mkDefault false; };

  evalMachine = modules: specialArgs:
    import (nixpkgs + "/nixos/lib/eval-config.nix") {
      inherit system pkgs lib specialArgs;
      modules = [ noManual ] ++ modules;
    };

  machines =
    if hive != null then
      import ./hive.nix {
        inherit lib pkgs evalMachine;
        hive = import hive;
        # A hive names what it needs: the package set, this lodis source.
        hiveArgs = { inherit pkgs; lodis = ../.; };
      }
    else {
      machine = evalMachine [
        ./module.nix
        { boot.isContainer = true; system.stateVersion = "24.11"; }
        (builtins.fromJSON config)
      ] { };
    };

  interesting = name: lib.hasPrefix "lodis" name || builtins.elem name [ "polkit.service" "nginx.service" ];

  report = nixos:
    let
      cfg = nixos.config;
      toplevel = cfg.system.build.toplevel;
      unit = u: {
        inherit (u) text enable wantedBy requiredBy;
        overrideStrategy = u.overrideStrategy or null;
      };
    in
    # Forcing the toplevel is where NixOS checks its assertions.
    builtins.seq toplevel.type {
      units = lib.mapAttrs (_: unit) (lib.filterAttrs (n: _: interesting n) cfg.systemd.units);
      systemdPackages = map toString cfg.systemd.packages;
      systemPackages = map toString cfg.environment.systemPackages;
      inherit (cfg.environment) pathsToLink;
      polkit = {
        inherit (cfg.security.polkit) enable;
        etc = lib.mapAttrs (_: e: { inherit (e) enable target; source = toString e.source; })
          (lib.filterAttrs (n: _: lib.hasPrefix "polkit-1/" n) cfg.environment.etc);
      };
      firewall = { inherit (cfg.networking.firewall) enable allowedTCPPorts; };
      nginx = {
        inherit (cfg.services.nginx) enable;
        upstreams = lib.mapAttrs (_: u: { servers = lib.mapAttrs (_: _: { }) u.servers; }) cfg.services.nginx.upstreams;
        virtualHosts = lib.mapAttrs (_: v: { locations = lib.mapAttrs (_: l: { inherit (l) proxyPass; }) v.locations; })
          cfg.services.nginx.virtualHosts;
      };
      users = {
        lodis = if cfg.users.users ? lodis then { inherit (cfg.users.users.lodis) isSystemUser group home description; } else null;
        groups = lib.attrNames cfg.users.groups;
      };
      inherit (cfg) warnings;
      lodis = {
        inherit (cfg.services.lodis) enable ports listenAddress;
        package = toString cfg.services.lodis.package;
      };
      deployment = cfg.deployment or null;
    };
in
lib.mapAttrs (_: report) machines
