# stand-in-pkgs.nix is a package set for evaluating NixOS configurations
# with nixpkgs' lib/ and nixos/ but without its pkgs/ (nix/eval-nixos.nix).
# It is not nixpkgs: every package is a derivation that gets an out path but
# could never be built, and the builders NixOS modules call (writeText,
# runCommand, buildEnv, formats, ...) keep what they were given (text,
# script, arguments) so that a test can look at it.
#
# packages are the packages NixOS's modules ask for when they evaluate
# lodis's configurations (a container, a host with a boot loader, nginx,
# polkit); names adds more. A name missing is an `attribute 'NAME' missing'
# (or `undefined variable', or `NAME cannot be found in pkgs') error from
# the module that uses it. package is the lodis package.
{ lib, nixpkgs, system, names ? [ ], package ? null }:

let
  platform = lib.systems.elaborate system;

  packages = [
    "acl" "attr" "bashInteractive" "bcache-tools" "bzip2" "coreutils" "coreutils-full" "cpio"
    "curl" "dbus" "diffutils" "dosfstools" "e2fsprogs" "findutils" "fish" "fontconfig" "fuse"
    "fuse3" "gawk" "getconf" "getent" "glibcLocales" "gnugrep" "gnupatch" "gnused" "gnutar"
    "grub2" "gzip" "hicolor-icon-theme" "host" "iproute2" "iptables" "iputils" "kbd"
    "kexec-tools" "kmod" "less" "libcap" "logrotate" "lvm2" "makeInitrdNGTool" "man-db"
    "mkpasswd" "nano" "ncurses" "netcat" "nettools" "nix" "nix-bash-completions" "nix-info"
    "nixos-container" "nixos-firewall-tool" "nixos-option" "nixos-rebuild" "nsncd" "openresolv"
    "openresty" "openssh" "pam" "perl" "polkit" "procps" "python3" "rsync" "shadow" "shared-mime-info"
    "sound-theme-freedesktop" "strace" "su" "sudo" "systemd" "tengine" "texinfoInteractive"
    "time" "tzdata" "util-linux" "which" "xonsh" "xz" "zsh" "zstd"
  ];

  # standIn is a package: an out path and the attributes modules read.
  standIn = name: extra:
    let
      drv = builtins.derivation {
        inherit name system;
        builder = "/bin/sh";
        args = [ "-c" "exit 1" ];
      };
      self = drv // {
        pname = name;
        version = "0";
        meta = { };
        passthru = { };
        out = self;
        bin = self;
        dev = self;
        lib = self;
        man = self;
        outputs = [ "out" ];
        override = _: self;
        overrideAttrs = _: self;
        overrideDerivation = _: self;
        withPackages = _: self;
      } // extra;
    in
    self;

  # writer keeps a written file's text (writeText and its kin).
  writer = name: text: standIn (baseNameOf name) { inherit text; };
  # runner keeps a build script (runCommand and its kin).
  runner = name: env: script: standIn name { inherit script env; };

  # A format: any value is accepted, generate keeps it.
  format = _args: {
    type = lib.types.anything;
    lib = { };
    generate = name: value: standIn name { inherit value; };
  };

  builders = rec {
    writeText = writer;
    writeTextDir = path: text: standIn (baseNameOf path) { inherit path text; };
    writeTextFile = { name, text, ... }@args: standIn name args;
    writeScript = writer;
    # The *Bin writers name their program, as nixpkgs' do (lib.getExe).
    writeScriptBin = name: text: writer name text // { meta.mainProgram = name; };
    writeShellScript = writer;
    writeShellScriptBin = name: text: writer name text // { meta.mainProgram = name; };
    writeShellApplication = { name, text, ... }@args: standIn name args;
    writeClosure = _paths: standIn "closure" { };
    writeReferencesToFile = _path: standIn "references" { };
    runCommand = runner;
    runCommandLocal = runner;
    runCommandNoCC = runner;
    runCommandCC = runner;
    substituteAll = args: standIn (args.name or (baseNameOf (toString args.src))) { inherit args; };
    replaceVars = src: vars: standIn (baseNameOf (toString src)) { inherit vars; };
    symlinkJoin = args: standIn args.name { inherit args; };
    buildEnv = args: standIn args.name { inherit args; };
    closureInfo = _args: standIn "closure-info" { };
    makeBinaryWrapper = standIn "make-binary-wrapper" { };
    makeWrapper = standIn "make-wrapper" { };
    # callPackage on lodis's nix/package.nix is the lodis stand-in.
    callPackage = path: _args:
      if path == ./package.nix && package != null then package else standIn (baseNameOf path) { };
    formats = lib.genAttrs [
      "ini" "iniWithGlobalSection" "json" "yaml" "toml" "keyValue" "gitIni" "elixirConf"
      "lua" "php" "javaProperties" "hocon" "libconfig" "pythonVars" "nixConf" "systemd"
    ] (_: format);
    writers = {
      writeNginxConfig = writer;
      writeBash = writer;
      writeBashBin = writer;
      writeDash = writer;
      writePython3 = name: _args: text: writer name text;
      writePython3Bin = name: _args: text: writer name text;
    };
    stdenv = standIn "stdenv" (lib.filterAttrs (n: _: lib.hasPrefix "is" n) platform // {
      hostPlatform = platform;
      buildPlatform = platform;
      targetPlatform = platform;
      isLinux = true;
      shell = "/bin/sh";
      cc = standIn "cc" { libc = standIn "glibc" { }; };
      mkDerivation = args: standIn (args.name or "${args.pname}-${args.version}") { inherit args; };
    });
    stdenvNoCC = stdenv;

    # Packages whose attributes modules read.
    dhcpcd = standIn "dhcpcd" { enablePrivSep = false; };
    nginxStable = standIn "nginx" { modules = [ ]; };

    # A kernel package set: the kernel and its modules.
    linuxPackages = kernelPackages;
    linuxPackages_latest = kernelPackages;
  };

  kernelPackages = lib.makeExtensible (_: {
    kernel = standIn "linux" {
      version = "6.6.0";
      modDirVersion = "6.6.0";
      features = { };
      config = {
        isEnabled = _: true;
        isYes = _: true;
        isModule = _: false;
        isSet = _: true;
        getValue = _: null;
      };
      kernelOlder = _: false;
      kernelAtLeast = _: true;
    };
  });

  pkgs = lib.genAttrs (packages ++ names) (name: standIn name { })
    // builders
    // lib.optionalAttrs (package != null) { lodis = package; }
    // {
      _type = "pkgs";
      inherit lib system;
      path = nixpkgs;
      config = { };
      overlays = [ ];
      appendOverlays = _: pkgs;
    }
    # Other package sets of nixpkgs (cross, static, 32-bit) are this one.
    // lib.genAttrs [
      "__splicedPackages" "buildPackages" "targetPackages" "pkgsBuildBuild" "pkgsBuildHost"
      "pkgsBuildTarget" "pkgsHostHost" "pkgsHostTarget" "pkgsTargetTarget" "pkgsStatic"
      "pkgsMusl" "pkgsi686Linux" "pkgsLLVM"
    ] (_: pkgs) // {
      hostPlatform = platform;
      buildPlatform = platform;
      targetPlatform = platform;
    };
in
pkgs
