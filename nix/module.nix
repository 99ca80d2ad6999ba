# module.nix is the NixOS module for lodis: services.lodis.
#
# The unit files are the package's, installed from units/ (systemd.packages)
# as `make install` installs them: the worker templates lodis@.service and
# lodis-alt@.service with their drop-in 10-worker.conf (units/lodis-worker.conf),
# the sockets, the supervisor, the upgrade units, and the generator
# lodis-generator, which NixOS links into /etc/systemd/system-generators from
# the same package list. This module adds no unit of its own. NixOS ignores
# [Install] sections, so the module says which units are wanted, reading each
# unit's WantedBy= from units/: one socket per port (lodis@PORT.socket), the
# supervisor, the upgrade watcher, the metrics socket. Settings reach the units
# as drop-ins (overrides.conf).
#
# The app is described as on any host, in /etc/lodis/app.conf
# (services.lodis.app, written in app.conf's own syntax): at every boot and
# daemon-reload (every switch) lodis-generator turns it into the workers'
# drop-in 50-app.conf, and lodis upgrade and the supervisor read it too. The
# old idleTimeout and extraArgs are arguments of the default app, lodis serve,
# and go into its APP_ARGS=.
#
# /var/lib/lodis/current, the app every worker runs, is pointed at
# services.lodis.app.program (the app package's main program), or at the
# lodis package's own binary when there is no app, at every boot and whenever
# a rebuild changes it (tmpfiles L+). An app dropped into
# /var/lib/lodis/incoming is rolled out as on any host (upgrade.enable), and
# lasts until then: on NixOS the release of record is the configured app.
#
# services.lodis.metrics turns on lodis-metrics.socket: the supervisor's
# Prometheus metrics and status page over TCP (read-only), on the address
# and port given. The package ships alerting rules and a Grafana dashboard
# for them (share/lodis/prometheus, share/lodis/grafana; see metrics.enable).
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
  # hasUnit tells whether units/ has a unit (the supervisor, the upgrade
  # watcher and the metrics socket came after the socket and the worker).
  hasUnit = name: builtins.pathExists (unitFile name);
  unitLines = name: lib.splitString "\n" (builtins.readFile (unitFile name));
  # directive returns the values of every `Key=` line of a unit file.
  directive = key: name:
    map (lib.removePrefix "${key}=") (builtins.filter (lib.hasPrefix "${key}=") (unitLines name));
  # wantedBy is what the unit's [Install] section asks for.
  wantedBy = name: builtins.filter (t: t != "") (builtins.concatMap (lib.splitString " ") (directive "WantedBy" name));

  # The worker's command line as units/lodis-worker.conf has it: the
  # launcher, then the default app's arguments. lodis-generator writes the
  # same launcher, with APP_ARGS= after it, into the workers' 50-app.conf.
  launcher = "@BINDIR@/lodis exec-app -- ";
  workerExecStart = builtins.head (directive "ExecStart" "lodis-worker.conf");
  defaultAppArgs =
    if lib.hasPrefix launcher workerExecStart
    then builtins.filter (w: w != "") (lib.splitString " " (lib.removePrefix launcher workerExecStart))
    else throw "units/lodis-worker.conf: ExecStart=${workerExecStart} does not start with `${launcher}': nix/module.nix reads the default app's arguments after it";
  # serveArgs are the old options, arguments of lodis serve (the default app).
  serveArgs = lib.optionals (cfg.idleTimeout != null) [ "--idle-timeout" cfg.idleTimeout ] ++ cfg.extraArgs;
  # The app's arguments in APP_ARGS=.
  appArgs = cfg.app.args ++ lib.optionals (cfg.app.program == null) serveArgs;

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

  # nanoseconds is the length of a duration the type above accepts, a float.
  unitNanoseconds = { ns = 1; us = 1000; ms = 1000000; s = 1000000000; m = 60000000000; h = 3600000000000; };
  nanoseconds = d:
    let
      # [ whole null fraction unit ]: the longer unit first, so that 5ms is not 5m and s.
      terms = builtins.filter builtins.isList (builtins.split "([0-9]+)(\\.([0-9]+))?(ns|us|ms|h|m|s)" d);
      whole = t: builtins.head (builtins.match "0*([0-9]+)" (builtins.elemAt t 0));
      fraction = t: let f = builtins.elemAt t 2; in if f == null then "0" else f;
      value = t: builtins.fromJSON "${whole t}.${fraction t}" * unitNanoseconds.${builtins.elemAt t 3};
    in
    builtins.foldl' (sum: t: sum + value t) 0 terms;
  # durationFrom is a duration within what app.conf accepts for a key
  # (internal/appconf), so that lodis-generator never refuses the file.
  durationFrom = low: high: words: duration // {
    description = "duration from ${words} (a Go duration)";
    check = v: duration.check v && nanoseconds v >= unitNanoseconds.ms * low && nanoseconds v <= unitNanoseconds.ms * high;
  };
  second = 1000;
  healthTimeout = durationFrom 1 (300 * second) "1ms to 5m, such as 2s or 500ms";
  stopTimeout = durationFrom second (3600 * second) "1s to 1h, such as 15s or 1m30s";
  appIdleTimeout = durationFrom second (86400 * second) "1s to 24h, such as 5m, or 0 for none" // {
    check = v: v == "0" || (durationFrom second (86400 * second) "").check v;
  };

  # The app's settings, refusing what internal/appconf refuses.
  # arg: systemd expands specifiers (%i) and $VARIABLES in ExecStart=.
  arg = types.strMatching "([^%[:cntrl:]]|%[A-Za-z%])*" // {
    description = "string without control characters (newline, tab), with % only in a specifier such as %i or %%";
  };
  healthPath = types.strMatching "/[^?#%\\\"' [:cntrl:]]*" // {
    description = "absolute URL path such as /healthz (no query, fragment, %, quotes, backslash or space)";
  };
  environmentFile = types.strMatching "/[^ %$\\\"'[:cntrl:]]*" // {
    description = "absolute path, as a string (a Nix path would copy the file into the store), without spaces, quotes, backslash, % or $";
  };
  # program is the target of a tmpfiles.d line, which expands % and \.
  program = types.strMatching "/[^%\\'\"[:space:][:cntrl:]]+" // {
    description = "absolute path of an executable (no spaces, quotes, backslash or %)";
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

  # NixOS's tmpfiles for lodis: the package's, every line as it is, except
  # that the link `current` is replaced (L+) so that it follows the
  # configuration, and points at the app's program when there is one.
  currentLink = "/var/lib/lodis/current";
  tmpfiles = pkgs.runCommand "lodis-tmpfiles" { } ''
    mkdir -p $out/lib/tmpfiles.d
    awk -v link=${currentLink} -v target=${lib.escapeShellArg (if cfg.app.program == null then "" else cfg.app.program)} '
      $1 ~ /^L/ && $2 == link { $1 = "L+"; if (target != "") $NF = target; found = 1 }
      { print }
      END { if (!found) { print "lodis tmpfiles.d has no L line for " link > "/dev/stderr"; exit 1 } }
    ' ${cfg.package}/lib/tmpfiles.d/lodis.conf > $out/lib/tmpfiles.d/lodis.conf
  '';

  # /etc/lodis/app.conf in its own syntax (internal/appconf): KEY=value
  # lines, one pair of quotes around a value taken off. APP_ARGS= is split
  # like a command line (appconf.SplitArgs): a word of plain characters
  # stands as it is, any other is double-quoted with \ and " escaped; a
  # value holding quotes is quoted once more as a whole.
  plainWord = w: builtins.match "[A-Za-z0-9_./:=,+@%-]+" w != null;
  escapeQuoted = builtins.replaceStrings [ "\\" "\"" ] [ "\\\\" "\\\"" ];
  quoteWord = w: if plainWord w then w else "\"${escapeQuoted w}\"";
  quoteValue = v:
    if builtins.match "[^\"']*" v != null then v
    else if builtins.match "[^']*" v != null then "'${v}'"
    else "\"${escapeQuoted v}\"";
  yesNo = b: if b then "yes" else "no";
  setting = key: v: lib.optional (v != null) "${key}=${v}\n";
  appConf = builtins.concatStringsSep "" ([
    ''
      # /etc/lodis/app.conf, written by NixOS from services.lodis.app: change the
      # configuration, not this file. A key left out keeps lodis's default.
    ''
    "APP_ARGS=${quoteValue (builtins.concatStringsSep " " (map quoteWord appArgs))}\n"
  ]
  ++ setting "HEALTH_PATH" cfg.app.healthPath
  ++ setting "HEALTH_TIMEOUT" cfg.app.healthTimeout
  ++ setting "READY" cfg.app.ready
  ++ setting "ENV_FILE" cfg.app.environmentFile
  ++ setting "STATE_DIR" (if cfg.app.stateDir == null then null else yesNo cfg.app.stateDir)
  ++ setting "IDLE_TIMEOUT" cfg.app.idleTimeout
  ++ setting "STOP_TIMEOUT" cfg.app.stopTimeout
  ++ setting "OVERLAP" (if cfg.app.overlap == null then null else yesNo cfg.app.overlap));
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
        For the default app (app.program null): its worker exits after this
        long without an open connection (lodis serve --idle-timeout, a Go
        duration, added to app.args); its port keeps listening. null keeps
        lodis serve's default (30s). For an idle stop of any app, enforced by
        the supervisor, see app.idleTimeout. With an app of your own this is
        an error: put its arguments in app.args.
      '';
    };

    extraArgs = mkOption {
      type = types.listOf (types.strMatching "[A-Za-z0-9_./:=,+@-]+");
      default = [ ];
      example = [ "--log-level" "debug" ];
      description = ''
        More arguments for the default app, `lodis serve` (app.program null),
        added to app.args after idleTimeout's. With an app of your own this is
        an error: put its arguments in app.args.
      '';
    };

    app = {
      package = mkOption {
        type = types.nullOr types.package;
        default = null;
        example = lib.literalExpression "pkgs.writeScriptBin \"hello\" ...";
        description = ''
          The app every worker runs, your web service (docs/apps.md says what
          it must do). Its main program (app.program) is the release of
          record: /var/lib/lodis/current points at it at every boot and every
          switch that changes it. null: the lodis package's own `lodis serve`.
          A switch moves no running worker: each port runs the new app from
          its next worker start (see docs/fleet.md for a roll-out).
        '';
      };

      program = mkOption {
        type = types.nullOr program;
        default = if cfg.app.package == null then null else lib.getExe cfg.app.package;
        defaultText = lib.literalExpression "if app.package == null then null else lib.getExe app.package";
        example = lib.literalExpression "\"\${myApp}/bin/myapp-server\"";
        description = ''
          The executable /var/lib/lodis/current points at: the app package's
          main program (meta.mainProgram) unless another is named. null: the
          lodis package's binary, which serves `lodis serve`.
        '';
      };

      args = mkOption {
        type = types.listOf arg;
        default = if cfg.app.program == null then defaultAppArgs else [ ];
        defaultText = lib.literalExpression ''if app.program == null then [ "serve" "--port" "%i" ] else [ ]'';
        example = [ "--listen-fd" "3" "--title" "my app" "%i" ];
        description = ''
          The arguments the app is started with (APP_ARGS=), each word as it
          is: `%i` is the port (so is $LODIS_PORT), a literal % is written %%
          and a literal $ $$ (systemd expands both in ExecStart=). For the
          default app, idleTimeout and extraArgs are added after them.
        '';
      };

      healthPath = mkOption {
        type = types.nullOr healthPath;
        default = null;
        example = "/healthz";
        description = "The GET that must answer 2xx when the app is healthy (HEALTH_PATH=). null: lodis's default, /__/health.";
      };

      healthTimeout = mkOption {
        type = types.nullOr healthTimeout;
        default = null;
        example = "500ms";
        description = "How long one health check may take (HEALTH_TIMEOUT=). null: lodis's default, 2s.";
      };

      ready = mkOption {
        type = types.nullOr (types.enum [ "notify" "health" ]);
        default = null;
        example = "health";
        description = ''
          How the app says it is ready (READY=): "notify", it sends READY=1
          (sd_notify; the unit is Type=notify), or "health", it knows nothing
          of sd_notify and is ready once healthPath answers 2xx (Type=exec).
          null: lodis's default, notify.
        '';
      };

      environmentFile = mkOption {
        type = types.nullOr environmentFile;
        default = null;
        example = "/run/secrets/myapp.env";
        description = ''
          An extra EnvironmentFile= for the app (ENV_FILE=), read by systemd
          when a worker starts: an absolute path on the host, given as a
          string so that secrets stay out of the Nix store.
        '';
      };

      stateDir = mkOption {
        type = types.nullOr types.bool;
        default = null;
        description = ''
          Whether the app gets a writable state directory, $STATE_DIRECTORY
          (STATE_DIR=; StateDirectory=lodis-app). null: lodis's default, no.
        '';
      };

      idleTimeout = mkOption {
        type = types.nullOr appIdleTimeout;
        default = null;
        example = "5m";
        description = ''
          The supervisor stops a worker whose port had no established
          connection for this long (IDLE_TIMEOUT=, counted from the kernel);
          the port keeps listening. "0" or null: never (the app may still exit
          by itself, as lodis serve does after idleTimeout).
        '';
      };

      stopTimeout = mkOption {
        type = types.nullOr stopTimeout;
        default = null;
        example = "30s";
        description = "How long the app has to drain and exit after SIGTERM (STOP_TIMEOUT=, TimeoutStopSec=). null: lodis's default, 15s.";
      };

      overlap = mkOption {
        type = types.nullOr types.bool;
        default = null;
        description = ''
          Whether a roll-out starts each port's new worker beside the old one,
          on the same socket, and stops the old one once the new one is
          healthy (OVERLAP=); false restarts the worker in place, for an app
          that cannot run twice at once. null: lodis's default, true.
        '';
      };
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

    metrics.enable = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Whether to serve the supervisor's Prometheus metrics (GET /metrics)
        and its status page (GET /) over TCP, read-only, on listenAddress and
        port (lodis-metrics.socket; docs/metrics.md names every metric).
        Whoever reaches the port reads them. The package ships alerting rules
        and a Grafana dashboard for them, e.g.
        services.prometheus.ruleFiles = [ "''${config.services.lodis.package}/share/lodis/prometheus/lodis.rules.yml" ];
        and share/lodis/grafana/lodis-dashboard.json.
      '';
    };

    metrics.listenAddress = mkOption {
      type = address;
      default = "127.0.0.1";
      example = "::";
      description = "Address lodis-metrics.socket listens on (an IPv4 or IPv6 address; \"::\" or \"0.0.0.0\" for every one).";
    };

    metrics.port = mkOption {
      type = port;
      default = 9187;
      description = "Port lodis-metrics.socket listens on (1-65535).";
    };

    metrics.openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Whether to open metrics.port in the firewall, for a Prometheus on another host.";
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
        {
          assertion = cfg.app.program != null || cfg.app.args != [ ];
          message = "services.lodis.app.args is empty, but the default app, the lodis binary, needs its subcommand: [ ${lib.concatMapStrings (a: "\"${a}\" ") defaultAppArgs}] (or set services.lodis.app.package for an app of your own)";
        }
        {
          assertion = cfg.app.program == null || serveArgs == [ ];
          message = "services.lodis.idleTimeout and services.lodis.extraArgs are arguments of lodis serve, the default app, but services.lodis.app.program is ${toString cfg.app.program}: put your app's arguments in services.lodis.app.args (and an idle stop in services.lodis.app.idleTimeout)";
        }
      ];

      # The lodis command (lodis status, lodis releases, ...) and, through
      # the polkit module's environment.pathsToLink, the polkit rule.
      environment.systemPackages = [ cfg.package ];

      systemd.packages = [ cfg.package ];
      systemd.tmpfiles.packages = [ tmpfiles ];
      systemd.sockets = builtins.listToAttrs (map socket cfg.ports);

      # The app, as lodis-generator, lodis upgrade and the supervisor read
      # it. A switch that changes it reloads systemd, which runs the
      # generator again.
      environment.etc."lodis/app.conf".text = appConf;

      users.users.lodis = {
        isSystemUser = true;
        group = "lodis";
        home = "/var/lib/lodis";
        description = "lodis supervisor";
      };
      users.groups.lodis = { };
    }

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

    (mkIf cfg.metrics.enable (
      if hasUnit "lodis-metrics.socket" then {
        # lodis-metrics.service, which it activates, comes from the package
        # as it is; it asks the supervisor over its unix socket.
        systemd.sockets.lodis-metrics = {
          overrideStrategy = "asDropin";
          wantedBy = wantedBy "lodis-metrics.socket";
          # An empty entry first resets the unit's ListenStream=.
          listenStreams = [ "" (hostPort cfg.metrics.listenAddress cfg.metrics.port) ];
        };
      } else {
        # The message names the address, so that a bad one is refused now.
        warnings = [ "services.lodis.metrics.enable: this lodis source has no lodis-metrics.socket yet: nothing listens on ${hostPort cfg.metrics.listenAddress cfg.metrics.port}" ];
      }
    ))

    (mkIf (cfg.metrics.enable && cfg.metrics.openFirewall) {
      networking.firewall.allowedTCPPorts = [ cfg.metrics.port ];
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
