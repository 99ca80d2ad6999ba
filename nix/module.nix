# module.nix is the NixOS module for lodis: services.lodis.
#
# The unit files are the package's, installed from units/ (systemd.packages);
# this module adds no unit of its own. NixOS ignores [Install] sections, so the
# module says which units are wanted, reading each unit's WantedBy= from
# units/: one socket per port (lodis@PORT.socket), the supervisor and the
# upgrade watcher. Settings reach the units as drop-ins (overrides.conf).
#
# /var/lib/lodis/current, the binary every worker runs, is pointed at the
# configured package at every boot and whenever a rebuild changes the
# package (tmpfiles L+). A binary dropped into /var/lib/lodis/incoming is
# rolled out as on any host (upgrade.enable), and lasts until then: on NixOS
# the release of record is services.lodis.package.
#
# The supervisor runs as user lodis and acts on units through the system bus:
# the module turns polkit on and puts the package in the system path, where
# the package's rule (share/polkit-1/rules.d/50-lodis.rules) is linked into
# /run/current-system/sw/share/polkit-1, the rules directory NixOS's polkit
# reads.
{ config, lib, pkgs, ... }:

let
  inherit (lib) mkOption mkEnableOption mkIf mkMerge types;
  cfg = config.services.lodis;

  unitFile = name: ../units + "/${name}";
  # hasUnit tells whether units/ has a unit (the supervisor and the upgrade
  # watcher came after the socket and the worker).
  hasUnit = name: builtins.pathExists (unitFile name);
  unitLines = name: lib.splitString "\n" (builtins.readFile (unitFile name));
  # directive returns the values of every `Key=` line of a unit file.
  directive = key: name:
    map (lib.removePrefix "${key}=") (builtins.filter (lib.hasPrefix "${key}=") (unitLines name));
  # wantedBy is what the unit's [Install] section asks for.
  wantedBy = name: builtins.filter (t: t != "") (builtins.concatMap (lib.splitString " ") (directive "WantedBy" name));

  # The worker's command line as units/ has it, plus the settings below.
  workerExecStart = builtins.head (directive "ExecStart" "lodis@.service");
  serveArgs = lib.optionals (cfg.idleTimeout != null) [ "--idle-timeout" cfg.idleTimeout ] ++ cfg.extraArgs;

  # Types of the settings, worded for their error messages.
  port = types.ints.between 1 65535;
  ipv4 = "((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";
  # At least two colons: "1.2.3.4:80" (an address with a port) is neither.
  ipv6 = "[0-9A-Fa-f.]*:[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*";
  hostname = "[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*";
  address = types.strMatching "${ipv4}|${ipv6}" // {
    description = "IPv4 or IPv6 address (no brackets, no port)";
  };
  host = types.strMatching "${ipv4}|${ipv6}|${hostname}" // {
    description = "host name or IP address (no brackets, no port)";
  };
  duration = types.strMatching "0|([0-9]+(\\.[0-9]+)?(ns|us|ms|s|m|h))+" // {
    description = "duration such as 30s, 5m or 1h30m (a Go duration)";
  };

  # hostPort is HOST:PORT, with an IPv6 address in brackets.
  hostPort = h: port: if lib.hasInfix ":" h then "[${h}]:${toString port}" else "${h}:${toString port}";

  # listen is ListenStream= for one port.
  listen = port:
    if cfg.listenAddress == null then toString port else hostPort cfg.listenAddress port;

  # upstream is where nginx reaches a port: on this host through its
  # listenAddress (loopback for the wildcards), or on each upstream host.
  upstream = port:
    if cfg.listenAddress == null || cfg.listenAddress == "0.0.0.0" then "127.0.0.1:${toString port}"
    else if cfg.listenAddress == "::" then "[::1]:${toString port}"
    else listen port;
  upstreams =
    if cfg.nginx.upstreamHosts == [ ] then map upstream cfg.ports
    else builtins.concatMap (h: map (hostPort h) cfg.ports) cfg.nginx.upstreamHosts;

  # The supervisor probes each port's health where the port listens, but its
  # unit allows only loopback traffic (IPAddressAllow=localhost): a port on
  # another address needs that address allowed too.
  probeAllow = lib.optional
    (cfg.listenAddress != null && !(builtins.elem cfg.listenAddress [ "0.0.0.0" "::" "::1" ])
      && !lib.hasPrefix "127." cfg.listenAddress)
    cfg.listenAddress;

  # duplicates lists the values that occur more than once in a list.
  duplicates = xs: lib.unique (builtins.filter (x: builtins.length (builtins.filter (y: y == x) xs) > 1) xs);

  # Per-port socket: a drop-in on the lodis@.socket template.
  socket = port: lib.nameValuePair "lodis@${toString port}" ({
    overrideStrategy = "asDropin";
    wantedBy = wantedBy "lodis@.socket";
  } // lib.optionalAttrs (cfg.listenAddress != null) {
    # An empty entry first resets the template's ListenStream=%i.
    listenStreams = [ "" (listen port) ];
  });

  # NixOS's tmpfiles for lodis: the package's, except that `current` is
  # replaced (L+) so that it follows the configured package.
  tmpfiles = pkgs.runCommand "lodis-tmpfiles" { } ''
    mkdir -p $out/lib/tmpfiles.d
    sed 's|^L |L+ |' ${cfg.package}/lib/tmpfiles.d/lodis.conf > $out/lib/tmpfiles.d/lodis.conf
  '';
in
{
  options.services.lodis = {
    enable = mkEnableOption "lodis, the socket-activated web service suite";

    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ./package.nix { };
      defaultText = lib.literalExpression "pkgs.callPackage ./nix/package.nix { }";
      description = "The lodis package: its binary and the unit files from units/.";
    };

    ports = mkOption {
      type = types.listOf port;
      default = lib.range 8080 8089;
      description = "Ports to serve (1-65535, each once), one socket unit (lodis@PORT.socket) each.";
    };

    listenAddress = mkOption {
      type = types.nullOr address;
      default = null;
      example = "127.0.0.1";
      description = "Address the ports listen on; null listens on every address.";
    };

    idleTimeout = mkOption {
      type = types.nullOr duration;
      default = null;
      example = "5m";
      description = ''
        A worker exits after this long without an open connection (lodis serve
        --idle-timeout, a Go duration); its port keeps listening. null keeps
        the worker's default (30s).
      '';
    };

    extraArgs = mkOption {
      type = types.listOf (types.strMatching "[A-Za-z0-9_./:=,+@-]+");
      default = [ ];
      example = [ "--log-level" "debug" ];
      description = "More arguments for every worker's `lodis serve`.";
    };

    supervisor.enable = mkOption {
      type = types.bool;
      default = true;
      description = "Whether to run the supervisor (lodis-supervisor.service), which repairs failed ports.";
    };

    upgrade.enable = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Whether to watch /var/lib/lodis/incoming for a new binary and roll it
        out (lodis-upgrade.path). Such a release lasts until the next boot or
        the next rebuild that changes services.lodis.package.
      '';
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Whether to open the ports in the firewall.";
    };

    nginx.enable = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Whether to put nginx (services.nginx) in front: an upstream `lodis`
        across every port, served by the virtual host `lodis`.
      '';
    };

    nginx.upstreamHosts = mkOption {
      type = types.listOf host;
      default = [ ];
      example = [ "10.0.0.2" "10.0.0.3" "10.0.0.4" ];
      description = ''
        Hosts whose lodis ports nginx balances over, each serving the same
        `ports` as this one (listening where this host's nginx reaches them,
        see listenAddress and openFirewall). Empty: this host only, through
        listenAddress (loopback when that is null or a wildcard). To include
        this host, list its address too.
      '';
    };
  };

  config = mkIf cfg.enable (mkMerge [
    {
      assertions = [
        {
          assertion = duplicates cfg.ports == [ ];
          message = "services.lodis.ports lists a port more than once: ${builtins.toJSON (duplicates cfg.ports)} in ${builtins.toJSON cfg.ports}";
        }
        {
          assertion = duplicates cfg.nginx.upstreamHosts == [ ];
          message = "services.lodis.nginx.upstreamHosts lists a host more than once: ${builtins.toJSON (duplicates cfg.nginx.upstreamHosts)}";
        }
      ];

      # The lodis command (lodis status, lodis releases, ...) and, through
      # the polkit module's environment.pathsToLink, the polkit rule.
      environment.systemPackages = [ cfg.package ];

      systemd.packages = [ cfg.package ];
      systemd.tmpfiles.packages = [ tmpfiles ];
      systemd.sockets = builtins.listToAttrs (map socket cfg.ports);

      users.users.lodis = {
        isSystemUser = true;
        group = "lodis";
        home = "/var/lib/lodis";
        description = "lodis supervisor";
      };
      users.groups.lodis = { };
    }

    (mkIf (serveArgs != [ ]) {
      systemd.services."lodis@" = {
        overrideStrategy = "asDropin";
        # An empty entry first resets the template's ExecStart=.
        serviceConfig.ExecStart = [ "" "${workerExecStart} ${lib.concatStringsSep " " serveArgs}" ];
      };
    })

    (mkIf cfg.supervisor.enable (
      if hasUnit "lodis-supervisor.service" then {
        systemd.services.lodis-supervisor = {
          overrideStrategy = "asDropin";
          wantedBy = wantedBy "lodis-supervisor.service";
        } // lib.optionalAttrs (probeAllow != [ ]) {
          serviceConfig.IPAddressAllow = probeAllow;
        };
        # The supervisor (User=lodis) starts, restarts and resets lodis
        # units only as the package's polkit rule allows.
        security.polkit.enable = true;
      } else {
        warnings = [ "services.lodis.supervisor.enable: this lodis source has no lodis-supervisor.service yet" ];
      }
    ))

    (mkIf cfg.upgrade.enable (
      if hasUnit "lodis-upgrade.path" then {
        systemd.paths.lodis-upgrade = {
          overrideStrategy = "asDropin";
          wantedBy = wantedBy "lodis-upgrade.path";
        };
      } else {
        warnings = [ "services.lodis.upgrade.enable: this lodis source has no lodis-upgrade.path yet" ];
      }
    ))

    (mkIf cfg.openFirewall {
      networking.firewall.allowedTCPPorts = cfg.ports;
    })

    (mkIf cfg.nginx.enable {
      services.nginx = {
        enable = true;
        upstreams.lodis.servers = builtins.listToAttrs (map (s: lib.nameValuePair s { }) upstreams);
        virtualHosts.lodis.locations."/".proxyPass = "http://lodis";
      };
    })
  ]);
}
