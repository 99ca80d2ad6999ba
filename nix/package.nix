# package.nix builds lodis with Nix: the static binary, stamped with its
# version through -ldflags -X, and, through the Makefile's own install recipe,
# the unit files from units/ in $out/lib/systemd/system plus tmpfiles.d and
# sysusers.d, with @BINDIR@ made $out/bin.
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

  vendorHash = "sha256-D80M70UCu517YSg9bp8yethRv7waR3PzyEyZpE0ozU0=";

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
