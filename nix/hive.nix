# hive.nix evaluates the nodes of a colmena hive the way colmena lays a
# hive out, for nix/eval-nixos.nix: every attribute but `meta`, `defaults`
# and `network` is a node, evaluated as a NixOS configuration of
# `defaults` and its own module(s), with `name` (the node's) and `nodes`
# (every node's evaluation) as module arguments beside meta.specialArgs.
# A hive that is a function is called with the arguments it names of
# hiveArgs.
#
# Two differences from colmena: the package set is pkgs (colmena would
# import meta.nixpkgs' own), and the deployment.* options are declared here
# (colmena brings its own module), with the types colmena documents for the
# ones a hive commonly sets.
{ lib, pkgs, evalMachine, hive, hiveArgs ? { } }:

let
  raw = if builtins.isFunction hive then hive (builtins.intersectAttrs (builtins.functionArgs hive) hiveArgs) else hive;
  meta = raw.meta or raw.network or { };
  defaults = raw.defaults or { };
  nodeNames = builtins.filter (n: !builtins.elem n [ "meta" "defaults" "network" ]) (builtins.attrNames raw);

  deploymentOptions = { name, ... }: {
    options.deployment = with lib; {
      targetHost = mkOption {
        type = types.nullOr types.str;
        default = name;
        description = "Where to reach the node over SSH.";
      };
      targetPort = mkOption {
        type = types.nullOr types.port;
        default = null;
        description = "The SSH port.";
      };
      targetUser = mkOption {
        type = types.nullOr types.str;
        default = "root";
        description = "The SSH user.";
      };
      tags = mkOption {
        type = types.listOf types.str;
        default = [ ];
        description = "Tags to select nodes by (colmena apply --on @TAG).";
      };
      buildOnTarget = mkOption {
        type = types.bool;
        default = false;
        description = "Whether to build the node's system on the node itself.";
      };
      allowLocalDeployment = mkOption {
        type = types.bool;
        default = false;
        description = "Whether the node may be deployed to from itself.";
      };
    };
  };

  modulesOf = name: let m = raw.${name}; in if builtins.isList m then m else [ m ];

  evalNode = name: evalMachine
    ([ deploymentOptions defaults ] ++ modulesOf name)
    ((meta.specialArgs or { }) // { inherit name nodes; });

  nodes = lib.genAttrs nodeNames evalNode;
in
nodes
