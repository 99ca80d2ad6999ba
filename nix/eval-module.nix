# eval-module.nix evaluates nix/module.nix with the stand-in lib
# (nix/lib-stub.nix) and a configuration given as JSON, and returns what the
# module sets, with failed assertions raised as errors. It needs no nixpkgs
# and no store:
#
#   nix-instantiate --eval --strict --json --store dummy:// nix/eval-module.nix \
#     --argstr config '{"services":{"lodis":{"enable":true}}}'
#
# package is the path that stands for the lodis package (default: a name that
# exists nowhere); appPackage, when given, the path of an app package (its
# main program bin/app), set as services.lodis.app.package, which JSON cannot
# express. test/nixos compares the result with units/.
{ config ? "{}", package ? "/nix/store/lodis-package-stand-in", appPackage ? null }:

let
  lib = import ./lib-stub.nix;

  standIn = name: outPath: {
    type = "derivation";
    inherit name outPath;
  };
  pkgs = {
    callPackage = _path: _args: standIn "lodis" package;
    runCommand = name: _env: script: standIn name "/nix/store/${name}-stand-in" // { inherit script; };
  };

  evaluated = lib.evalModules {
    modules = [ ./module.nix (builtins.fromJSON config) ]
      ++ lib.optional (appPackage != null) {
        services.lodis.app.package = standIn "app" appPackage // { meta.mainProgram = "app"; };
      };
    specialArgs = { inherit pkgs; };
  };
  cfg = lib.prune evaluated.config;
  failed = builtins.filter (a: !a.assertion) (cfg.assertions or [ ]);
  scripts = map (p: p.script or null);
in
if failed != [ ] then
  throw "Failed assertions:\n${lib.concatMapStrings (a: "- ${a.message}\n") failed}"
else {
  lodis = cfg.services.lodis;
  systemd = (cfg.systemd or { }) // {
    # The scripts of the derivations the module builds, to run in the test.
    tmpfilesScripts = scripts (cfg.systemd.tmpfiles.packages or [ ]);
  };
  users = cfg.users or { };
  networking = cfg.networking or { };
  security = cfg.security or { };
  environment = cfg.environment or { };
  nginx = cfg.services.nginx or null;
  warnings = cfg.warnings or [ ];
}
