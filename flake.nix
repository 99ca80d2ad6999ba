{
  description = "lodis: a socket-activated, self-healing and self-upgrading web service suite";

  # Go >= 1.26.8 is needed (go.mod).
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      commit = self.shortRev or self.dirtyShortRev or "unknown";
      version = "0-unstable-${builtins.substring 0 8 (self.lastModifiedDate or "19700101")}";
    in
    {
      packages = forAllSystems (pkgs: rec {
        lodis = pkgs.callPackage ./nix/package.nix { inherit version commit; };
        default = lodis;
      });

      nixosModules.default = { lib, pkgs, ... }: {
        imports = [ ./nix/module.nix ];
        services.lodis.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.default;
      };

      checks = forAllSystems (pkgs: {
        vm = import ./nix/test.nix {
          inherit pkgs;
          module = self.nixosModules.default;
        };
      });
    };
}
