# eval-nixos.nix evaluates nix/module.nix in a real NixOS evaluation:
# nixpkgs' nixos/lib/eval-config.nix with the full module list and nixpkgs'
# lib, but the package set of nix/stand-in-pkgs.nix, since pkgs/ is not
# needed to evaluate a configuration. It returns, for each machine, what the
# module system made of lodis: the units with their text, polkit, the system
# packages, the firewall, nginx, the lodis user, /etc/lodis/app.conf, the
# tmpfiles.d and generator scripts, and the warnings. The
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
# package (test/nixos lays one out with make install); appPackage, when
# given, the out path of an app package (main program bin/app), set as the
# machine's services.lodis.app.package, which JSON cannot express; names are
# more packages for the stand-in set, to try a configuration that asks for
# one it lacks. module, instead of config, is the path of a NixOS module
# setting services.lodis (a file of docs/), evaluated with lodis's module.
{ nixpkgs
, config ? "{}"
, hive ? null
, module ? null
, package ? "/nix/store/lodis-package-stand-in"
, appPackage ? null
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

  appStandIn = {
    type = "derivation";
    name = "app";
    pname = "app";
    version = "0";
    outPath = appPackage;
    meta.mainProgram = "app";
  };
  container = { boot.isContainer = true; system.stateVersion = "24.11"; };

  machines =
    if hive != null then
      import ./hive.nix {
        inherit lib pkgs evalMachine;
        hive = import hive;
        # A hive names what it needs: the package set, this lodis source.
        hiveArgs = { inherit pkgs; lodis = ../.; };
      }
    else if module != null then {
      machine = evalMachine [ ./module.nix container module ] { };
    }
    else {
      machine = evalMachine ([
        ./module.nix
        container
        (builtins.fromJSON config)
      ] ++ lib.optional (appPackage != null) { services.lodis.app.package = appStandIn; }) { };
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
        app = let a = cfg.services.lodis.app; in {
          inherit (a) args program;
          package = if a.package == null then null else toString a.package;
          # What a stand-in writer was given (writeScriptBin's script).
          text = if a.package == null then null else a.package.text or null;
        };
      };
      # /etc/lodis/app.conf as NixOS writes it.
      appConf =
        let e = cfg.environment.etc."lodis/app.conf" or null;
        in if e == null then null else { inherit (e) enable target text mode; };
      # The build scripts of the tmpfiles.d packages lodis adds (the stand-in
      # runCommand keeps them), to run in the test.
      tmpfilesScripts = map (p: p.script)
        (builtins.filter (p: (p.name or "") == "lodis-tmpfiles") cfg.systemd.tmpfiles.packages);
      # NixOS's own script that fills /etc/systemd/system-generators from
      # systemd.packages, with the packages it is given.
      generators =
        let hooks = cfg.environment.etc."systemd/system-generators".source;
        in { inherit (hooks) script; packages = map toString hooks.env.packages; };
      deployment = cfg.deployment or null;
    };
in
lib.mapAttrs (_: report) machines
