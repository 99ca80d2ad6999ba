# lib-stub.nix is a small stand-in for the parts of nixpkgs' `lib` that
# nix/module.nix uses, so that CI can evaluate the module with Debian's nix-bin
# and no nixpkgs (see nix/eval-module.nix). It is not nixpkgs:
#
# - mkOption, mkEnableOption, types.*: declarations with a type check and a
#   default, as in nixpkgs;
# - mkIf and mkMerge: pushed down to the leaves before their conditions are
#   evaluated, so a condition may read config (mkIf cfg.enable ...), as in
#   nixpkgs;
# - evalModules: merges modules into one config. Options under a declared
#   group (services.lodis.*) are checked: an unknown name or a value of the
#   wrong type is an error. Everything else (systemd.*, users.*, services.nginx
#   ...) stands for NixOS's own options and is merged by shape: attribute sets
#   key by key, lists concatenated, other values must agree.
#
# mkDefault, mkForce, submodules and option priorities are not implemented;
# the module does not use them.
let
  inherit (builtins)
    all
    attrNames
    concatLists
    concatMap
    elem
    filter
    foldl'
    genList
    head
    isAttrs
    isBool
    isFunction
    isInt
    isList
    isPath
    isString
    length
    listToAttrs
    mapAttrs
    match
    split
    stringLength
    substring
    toJSON
    ;

  lib = rec {
    # Lists, strings and attribute sets.
    range = first: last: if first > last then [ ] else genList (n: first + n) (last - first + 1);
    optional = cond: x: if cond then [ x ] else [ ];
    optionals = cond: xs: if cond then xs else [ ];
    optionalAttrs = cond: as: if cond then as else { };
    nameValuePair = name: value: { inherit name value; };
    unique = foldl' (acc: x: if elem x acc then acc else acc ++ [ x ]) [ ];
    concatStringsSep = builtins.concatStringsSep;
    concatMapStrings = f: xs: builtins.concatStringsSep "" (map f xs);
    escapeRegex = builtins.replaceStrings
      [ "\\" "[" "]" "{" "}" "(" ")" "^" "$" "?" "*" "+" "|" "." ]
      [ "\\\\" "\\[" "\\]" "\\{" "\\}" "\\(" "\\)" "\\^" "\\$" "\\?" "\\*" "\\+" "\\|" "\\." ];
    splitString = sep: s: filter isString (split (escapeRegex sep) s);
    hasPrefix = p: s: substring 0 (stringLength p) s == p;
    removePrefix = p: s: if hasPrefix p s then substring (stringLength p) (-1) s else s;
    hasInfix = infix: s: length (split (escapeRegex infix) s) > 1;
    escapeShellArg = arg: "'${builtins.replaceStrings [ "'" ] [ "'\\''" ] (toString arg)}'";
    # getExe is a package's main program, as in nixpkgs (without its
    # warning for a package that names none).
    getExe = x: "${x.bin or x.out or x}/bin/${x.meta.mainProgram or x.pname or x.name}";
    literalExpression = text: {
      _type = "literalExpression";
      inherit text;
    };

    # Option declarations.
    mkOption = attrs: attrs // { _type = "option"; };
    mkEnableOption = name: mkOption {
      type = types.bool;
      default = false;
      description = "Whether to enable ${name}.";
    };
    mkIf = condition: content: {
      _type = "if";
      inherit condition content;
    };
    mkMerge = contents: {
      _type = "merge";
      inherit contents;
    };

    # Types carry nixpkgs' descriptions, so that their errors read as the
    # real lib's: a list is checked entry by entry, and a bad entry is named
    # `OPTION."[definition N-entry M]"'.
    types = rec {
      mkType = description: descriptionClass: check: {
        _type = "type";
        inherit description descriptionClass check;
      };
      # phrase is how a type is named inside another's description.
      phrase = classes: t: if elem t.descriptionClass classes then t.description else "(${t.description})";
      bool = mkType "boolean" "noun" isBool;
      str = mkType "string" "noun" isString;
      int = mkType "signed integer" "noun" isInt;
      port = mkType "16 bit unsigned integer; between 0 and 65535 (both inclusive)" "noun"
        (v: isInt v && v >= 0 && v <= 65535);
      ints.between = lowest: highest: mkType "integer between ${toString lowest} and ${toString highest} (both inclusive)" "noun"
        (v: isInt v && v >= lowest && v <= highest);
      package = mkType "package" "noun" (v: isAttrs v && v ? outPath);
      enum = values: mkType "one of ${builtins.concatStringsSep ", " (map (v: "\"${v}\"") values)}" "conjunction" (v: elem v values);
      strMatching = re: mkType "string matching the pattern ${re}" "noun" (v: isString v && match re v != null);
      listOf = t: mkType "list of ${phrase [ "noun" "composite" ] t}" "composite" isList // { elemType = t; };
      nullOr = t: mkType "null or ${phrase [ "noun" "conjunction" ] t}" "conjunction" (v: v == null || t.check v);
    };

    # evalModules merges modules (paths, functions or attribute sets) and
    # returns { config }. specialArgs are passed to module functions, beside
    # config and lib.
    evalModules = { modules, specialArgs ? { } }:
      let
        args = specialArgs // { inherit config lib; };
        load = m:
          let
            v = if isPath m || isString m then load (import m)
              else if isFunction m then m args
              else m;
            structured = v ? options || v ? config || v ? imports;
          in
          if isPath m || isString m then v
          else if structured then {
            options = v.options or { };
            config = v.config or { };
            imports = v.imports or [ ];
          }
          else {
            options = { };
            config = v;
            imports = [ ];
          };
        collect = ms: concatMap (m: let l = load m; in [ l ] ++ collect l.imports) ms;
        loaded = collect modules;
        config = mergeNode [ ] (map (m: m.options) loaded) (map (m: m.config) loaded);
      in
      { inherit config; };

    # prune drops what no active definition reached: attributes whose every
    # definition sat under a false mkIf.
    prune = v:
      if isUndefined v then v
      else if isPlain v then
        let
          kept = filter (n: !isUndefined (prune v.${n})) (attrNames v);
        in
        if kept == [ ] && attrNames v != [ ] then undefined
        else listToAttrs (map (n: nameValuePair n (prune v.${n})) kept)
      else if isList v then map prune v
      else v;
  };

  undefined = { _type = "undefined"; };
  isUndefined = v: isAttrs v && (v._type or null) == "undefined";
  isOption = v: isAttrs v && (v._type or null) == "option";
  # isPlain: an attribute set that is structure, not a value: no property
  # (mkIf, mkMerge), no package.
  isPlain = v: isAttrs v && !(v ? _type) && !(v ? outPath);
  showPath = p: builtins.concatStringsSep "." p;
  showValue = v: toJSON v;

  # pushDown turns one definition into a list of definitions whose mkIf and
  # mkMerge sit at the leaves, without evaluating any condition.
  pushDown = d:
    if isAttrs d && (d._type or null) == "merge" then concatMap pushDown d.contents
    else if isAttrs d && (d._type or null) == "if" then
      map (x: if isPlain x && x != { } then mapAttrs (_: lib.mkIf d.condition) x else lib.mkIf d.condition x)
        (pushDown d.content)
    else [ d ];

  # resolve evaluates the conditions of a leaf definition.
  resolve = d:
    if isAttrs d && (d._type or null) == "if" then (if d.condition then resolve d.content else [ ])
    else if isAttrs d && (d._type or null) == "merge" then concatMap resolve d.contents
    else [ d ];

  pick = n: xs: concatMap (x: if x ? ${n} then [ x.${n} ] else [ ]) xs;

  mergeNode = path: decls: defs:
    let
      opts = filter isOption decls;
      pushed = concatMap pushDown defs;
      strict = decls != [ ] && length path >= 2;
      names = lib.unique (concatMap attrNames (decls ++ pushed));
      unknown = filter (n: strict && pick n decls == [ ]) names;
    in
    if opts != [ ] then mergeOption path (head opts) defs
    else if decls == [ ] && pushed != [ ] && !(all isPlain pushed) then mergeLeaf path defs
    else if unknown != [ ] then throw "The option `${showPath (path ++ [ (head unknown) ])}' does not exist."
    else listToAttrs (map (n: lib.nameValuePair n (mergeNode (path ++ [ n ]) (pick n decls) (pick n pushed))) names);

  mergeValues = path: vals:
    if all isList vals then concatLists vals
    else if length (lib.unique vals) == 1 then head vals
    else throw "The option `${showPath path}' has conflicting definitions: ${builtins.concatStringsSep ", " (map showValue vals)}";

  mergeLeaf = path: defs:
    let vals = concatMap resolve defs;
    in if vals == [ ] then undefined else mergeValues path vals;

  mergeOption = path: opt: defs:
    let
      defVals = map resolve defs;
      vals = concatLists defVals;
      value =
        if vals != [ ] then mergeValues path vals
        else if opt ? default then opt.default
        else throw "The option `${showPath path}' is used but not defined.";
      # badEntries are a list option's entries of the wrong type, each
      # with its place: definition N (from 1), entry M (from 1).
      badEntries = concatLists (genList
        (n: concatLists (map
          (v: if isList v then
            filter (b: b != null) (genList
              (m: if opt.type.elemType.check (builtins.elemAt v m)
                then null
                else { inherit n m; value = builtins.elemAt v m; })
              (length v))
          else [ ])
          (builtins.elemAt defVals n)))
        (length defVals));
      notOfType = p: t: v: throw "A definition for option `${p}' is not of type `${t.description}'. Definition value: ${showValue v}";
    in
    if opt ? type && !(opt.type.check value) then notOfType (showPath path) opt.type value
    else if opt ? type && opt.type ? elemType && badEntries != [ ] then
      let b = head badEntries;
      in notOfType "${showPath path}.\"[definition ${toString (b.n + 1)}-entry ${toString (b.m + 1)}]\"" opt.type.elemType b.value
    else value;
in
lib
