# package.nix builds lodis with Nix: the static binary, stamped with its
# version through -ldflags -X, and, through the Makefile's own install recipe
# (the very files `make install` installs on any host), with @BINDIR@ made
# $out/bin: the unit files from units/ in $out/lib/systemd/system, among them
# both worker templates (lodis@.service, lodis-alt@.service) each with the
# drop-in 10-worker.conf (units/lodis-worker.conf); tmpfiles.d and
# sysusers.d; the polkit rule in share/polkit-1/rules.d; and the generator
# lib/systemd/system-generators/lodis-generator, a link to bin/lodis, which
# NixOS links into /etc/systemd/system-generators because the package is in
# systemd.packages (test/nixos checks the layout).
#
# vendorHash is the NAR hash of `go mod vendor` for go.mod/go.sum. When they
# change, `make nix-vendor-hash` prints the new value (test/nixos checks it).
# nixpkgs must have Go >= 1.26.8 (go.mod's go line).
{
  lib,
  buildGo126Module,
  version ? "dev",
  commit ? "unknown",
}:

buildGo126Module {
  pname = "lodis";
  inherit version;

  src = lib.cleanSourceWith {
    src = lib.cleanSource ../.;
    # Local build output is not source.
    filter = path: _type:
      !(builtins.elem (lib.removePrefix (toString ../. + "/") (toString path)) [ "bin" "dist" ".demo" "result" ]);
  };

  vendorHash = "sha256-T00p9UBcrW++FAesGQRBWCb5+7BWUBS1Qw2v0ofU1P4=";

  subPackages = [ "cmd/lodis" ];
  env.CGO_ENABLED = "0";
  ldflags = [
    "-s"
    "-w"
    "-X github.com/lodis/lodis/internal/buildinfo.Version=${version}"
    "-X github.com/lodis/lodis/internal/buildinfo.Commit=${commit}"
  ];

  # The Makefile installs the units; it finds the binary already built.
  postInstall = ''
    make install SHELL=$SHELL PREFIX=$out BIN=$GOPATH/bin/lodis VERSION=${version} COMMIT=${commit}
  '';

  meta = {
    description = "Socket-activated, self-healing and self-upgrading web service suite";
    homepage = "https://github.com/lodis/lodis";
    mainProgram = "lodis";
    platforms = lib.platforms.linux;
  };
}
