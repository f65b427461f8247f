# Evaluates modules/strata.nix under nixpkgs' own module system and checks
# what it generates. Run it through scripts/eval-module.sh.
#
# `nixpkgs` is the path of either
#   - nix-community/nixpkgs.lib (lib/ alone): the module is evaluated with
#     lib.evalModules next to ./nixos-stubs.nix, the NixOS options it sets; or
#   - a full nixpkgs checkout: the module is evaluated with the real NixOS
#     modules (nixos/lib/eval-config.nix), and the stubs are checked against
#     the real declarations.
#
# The result is { mode; passed = [ names ]; failed = [ { name; detail; } ];
# skipped = [ { name; reason; } ]; }.
{
  nixpkgs,
  system ? "x86_64-linux",
}:

let
  root = if builtins.isPath nixpkgs then nixpkgs else /. + nixpkgs;
  lib = import (root + "/lib");
  full = builtins.pathExists (root + "/nixos/lib/eval-config.nix");
  mode = if full then "nixos" else "lib-with-stubs";

  # Stands in for the Strata package: the module only passes it on (it is
  # never built here). Its outputs as package.nix declares them.
  fakeOutput =
    output:
    {
      type = "derivation";
      name = "strata-0.0.0-eval" + (if output == "out" then "" else "-${output}");
      pname = "strata";
      version = "0.0.0-eval";
      outPath = builtins.storeDir + "/00000000000000000000000000000000-strata-0.0.0-eval-${output}";
      outputName = output;
      meta.mainProgram = "strata-ctl";
    };
  fakePackage = fakeOutput "bin" // {
    outputs = [
      "bin"
      "out"
      "tools"
    ];
    out = fakeOutput "out";
    bin = fakeOutput "bin";
    tools = fakeOutput "tools";
  };

  # Stands in for the configuration's pkgs, in lib-with-stubs mode: records
  # which file the module's default package is called from.
  fakePkgs = {
    callPackage = file: args: fakePackage // { calledFrom = toString file; calledWith = args; };
  };

  evalConfig =
    configuration:
    if full then
      import (root + "/nixos/lib/eval-config.nix") {
        inherit system;
        modules = [
          ../strata.nix
          {
            boot.isContainer = true;
            system.stateVersion = lib.trivial.release;
          }
          configuration
        ];
      }
    else
      lib.evalModules {
        modules = [
          ./nixos-stubs.nix
          ../strata.nix
          { _module.args.pkgs = fakePkgs; }
          configuration
        ];
      };

  # Only what concerns Strata: a full NixOS evaluation has other assertions
  # and warnings of its own.
  isOurs = lib.hasInfix "services.strata";
  failedAssertions =
    c: map (a: a.message) (lib.filter (a: isOurs a.message && !a.assertion) c.assertions);
  ourWarnings = c: lib.filter isOurs c.warnings;

  check = name: ok: detail: { inherit name ok detail; };

  # Evaluates cleanly (no type error, no undeclared option).
  evaluates =
    c:
    (builtins.tryEval (
      builtins.deepSeq [
        c.services.strata
        c.systemd.services.strata-identity.environment
        c.systemd.services.strata-fs.environment
        c.systemd.services.strata-fs.serviceConfig
        c.systemd.services.strata-supervisor.environment
        (failedAssertions c)
      ] true
    )).success;

  # --- enable = true and nothing else -------------------------------------
  minimalEval = evalConfig { services.strata.enable = true; };
  minimal = minimalEval.config;
  minimalOptions = minimalEval.options;
  env = c: unit: c.systemd.services.${unit}.environment;

  minimalChecks = [
    (check "minimal: no assertion fails" (failedAssertions minimal == [ ]) (failedAssertions minimal))
    (check "minimal: no warning" (ourWarnings minimal == [ ]) (ourWarnings minimal))
    (check "minimal: strata.target is wanted by multi-user.target" (lib.elem "multi-user.target" minimal.systemd.targets.strata.wantedBy) minimal.systemd.targets.strata.wantedBy)
    (check "minimal: the three sockets are wanted by strata.target"
      (lib.all (s: lib.elem "strata.target" minimal.systemd.sockets.${s}.wantedBy) [
        "strata-identity"
        "strata-fs"
        "strata-supervisor"
      ])
      (lib.mapAttrs (_: s: s.wantedBy) (
        lib.filterAttrs (n: _: lib.hasPrefix "strata-" n) minimal.systemd.sockets
      ))
    )
    (check "minimal: the package's units are used (systemd.packages)" (lib.elem fakePackage.out.outPath (map toString minimal.systemd.packages)) null)
    (check "minimal: only strata-ctl (the package's bin output) is on the system PATH"
      (
        full
        || map toString minimal.environment.systemPackages == [ fakePackage.bin.outPath ]
      )
      (map toString minimal.environment.systemPackages)
    )
    (check "minimal: the default package is built from the configuration's own pkgs (pkgs.callPackage ./package.nix { })"
      (
        if full then
          minimal.services.strata.package.pname == "strata"
        else
          lib.hasSuffix "/package.nix" minimal.services.strata.package.calledFrom
          && minimal.services.strata.package.calledWith == { }
      )
      (minimal.services.strata.package.calledFrom or minimal.services.strata.package.name)
    )
    (check "minimal: the module declares its maintainers (meta)"
      (lib.any (f: lib.hasSuffix "modules/strata.nix" f) (lib.attrNames minimal.meta.maintainers))
      null
    )
    (check "minimal: the package's tmpfiles.d rules are used" (lib.elem fakePackage.out.outPath (map toString minimal.systemd.tmpfiles.packages)) null)
    (check "minimal: the services themselves are not started at boot (socket activation)"
      (lib.all (u: !(lib.elem "strata.target" (minimal.systemd.services.${u}.wantedBy or [ ]))) [
        "strata-identity"
        "strata-fs"
      ])
      null
    )
    (check "minimal: the static user strata-identity exists, in its own group"
      (
        minimal.users.users.strata-identity.isSystemUser
        && minimal.users.users.strata-identity.group == "strata-identity"
        && minimal.users.groups ? strata-identity
      )
      null
    )
    (check "minimal: the static user strata-fs exists, in its own group (DynamicUser breaks openat2)"
      (
        minimal.users.users.strata-fs.isSystemUser
        && minimal.users.users.strata-fs.group == "strata-fs"
        && minimal.users.groups ? strata-fs
      )
      null
    )
    (check "minimal: fs serves /srv" ((env minimal "strata-fs").STRATA_FS_ROOTS == "/srv") (env minimal "strata-fs"))
    (check "minimal: the unit's binds are replaced by /srv, read-only, skipped if missing"
      (
        minimal.systemd.services.strata-fs.serviceConfig.BindReadOnlyPaths == [
          ""
          "-/srv"
        ]
      )
      minimal.systemd.services.strata-fs.serviceConfig
    )
    (check "minimal: ProtectHome= is left as the unit has it" (!(minimal.systemd.services.strata-fs.serviceConfig ? ProtectHome)) null)
    (check "minimal: identity gets the documented defaults"
      (
        env minimal "strata-identity" == {
          STRATA_LOG = "info";
          STRATA_TOKEN_DEFAULT_TTL = "3600";
          STRATA_TOKEN_MAX_TTL = "86400";
        }
        || full # NixOS adds PATH, LOCALE_ARCHIVE, TZDIR to every service
      )
      (env minimal "strata-identity")
    )
    (check "minimal: identity TTLs are 3600 / 86400"
      (
        (env minimal "strata-identity").STRATA_TOKEN_DEFAULT_TTL == "3600"
        && (env minimal "strata-identity").STRATA_TOKEN_MAX_TTL == "86400"
      )
      (env minimal "strata-identity")
    )
    (check "minimal: supervisor checks every 5 s, restarts after 3 failures"
      (
        (env minimal "strata-supervisor").STRATA_SUPERVISOR_INTERVAL_SECS == "5"
        && (env minimal "strata-supervisor").STRATA_SUPERVISOR_FAILURE_THRESHOLD == "3"
      )
      (env minimal "strata-supervisor")
    )
    (check "minimal: every service logs at info"
      (lib.all (u: (env minimal u).STRATA_LOG == "info") [
        "strata-identity"
        "strata-fs"
        "strata-supervisor"
      ])
      null
    )
  ];

  # --- a non-trivial configuration ----------------------------------------
  nontrivial =
    (evalConfig {
      services.strata = {
        enable = true;
        admins.users = [
          "alice"
          "bob"
        ];
        admins.groups = [
          "wheel"
          "strata-admins"
        ];
        fs.paths = [
          "/srv/data"
          "/var/lib/reports"
        ];
        token.defaultTtl = 900;
        token.maxTtl = 7200;
        logLevel = "strata_fs=debug,info";
        supervisor.interval = 10;
        supervisor.failureThreshold = 5;
      };
      # An operator's own addition merges with the module's (a list).
      systemd.services.strata-fs.serviceConfig.BindReadOnlyPaths = [ "/etc/strata-extra" ];
    }).config;

  nontrivialChecks = [
    (check "nontrivial: no assertion fails" (failedAssertions nontrivial == [ ]) (failedAssertions nontrivial))
    (check "nontrivial: admins reach identity"
      (
        (env nontrivial "strata-identity").STRATA_ADMIN_USERS == "alice,bob"
        && (env nontrivial "strata-identity").STRATA_ADMIN_GROUPS == "wheel,strata-admins"
      )
      (env nontrivial "strata-identity")
    )
    (check "nontrivial: TTLs reach identity"
      (
        (env nontrivial "strata-identity").STRATA_TOKEN_DEFAULT_TTL == "900"
        && (env nontrivial "strata-identity").STRATA_TOKEN_MAX_TTL == "7200"
      )
      (env nontrivial "strata-identity")
    )
    (check "nontrivial: fs roots are colon-joined" ((env nontrivial "strata-fs").STRATA_FS_ROOTS == "/srv/data:/var/lib/reports") (env nontrivial "strata-fs"))
    (check "nontrivial: served paths are bound read-only, then the operator's own"
      (
        nontrivial.systemd.services.strata-fs.serviceConfig.BindReadOnlyPaths == [
          ""
          "-/srv/data"
          "-/var/lib/reports"
          "/etc/strata-extra"
        ]
      )
      nontrivial.systemd.services.strata-fs.serviceConfig.BindReadOnlyPaths
    )
    (check "nontrivial: supervisor settings"
      (
        (env nontrivial "strata-supervisor").STRATA_SUPERVISOR_INTERVAL_SECS == "10"
        && (env nontrivial "strata-supervisor").STRATA_SUPERVISOR_FAILURE_THRESHOLD == "5"
      )
      (env nontrivial "strata-supervisor")
    )
    (check "nontrivial: log filter on every service"
      (lib.all (u: (env nontrivial u).STRATA_LOG == "strata_fs=debug,info") [
        "strata-identity"
        "strata-fs"
        "strata-supervisor"
      ])
      null
    )
  ];

  home =
    (evalConfig {
      services.strata = {
        enable = true;
        fs.paths = [
          "/srv"
          "/home/shared"
        ];
      };
    }).config;
  homeChecks = [
    (check "home: serving under /home switches ProtectHome= to tmpfs"
      (
        failedAssertions home == [ ]
        && home.systemd.services.strata-fs.serviceConfig.ProtectHome == "tmpfs"
        && lib.elem "-/home/shared" home.systemd.services.strata-fs.serviceConfig.BindReadOnlyPaths
      )
      home.systemd.services.strata-fs.serviceConfig
    )
  ];

  # --- settings (RFC 42) -----------------------------------------------------
  withSettings =
    (evalConfig {
      services.strata = {
        enable = true;
        logLevel = "warn";
        token.maxTtl = 7200;
        settings = {
          identity.STRATA_ADMIN_GROUPS = [
            "wheel"
            "ops"
          ];
          identity.STRATA_ADMIN_UIDS = [
            1000
            1001
          ];
          fs = {
            STRATA_LOG = "strata_fs=debug,info";
            STRATA_FS_ROOTS = [
              "/srv/a"
              "/srv/b"
            ];
            STRATA_FS_ALLOW_HARDLINKS = true;
            STRATA_FS_LIST_CACHE = false;
            STRATA_FS_HANDLE_IDLE_SECS = 60;
            STRATA_AUDIT_MAX_BYTES = 1048576;
            # Keys the module does not declare pass through.
            STRATA_FUTURE_KNOB = "on";
            STRATA_FUTURE_COUNT = 7;
          };
          supervisor.STRATA_MAX_CONNECTIONS = 64;
        };
      };
    }).config;
  settingsChecks = [
    (check "settings: no assertion fails" (failedAssertions withSettings == [ ]) (failedAssertions withSettings))
    (check "settings: a dedicated option is its key's default (token.maxTtl gives STRATA_TOKEN_MAX_TTL)"
      (withSettings.services.strata.settings.identity.STRATA_TOKEN_MAX_TTL == 7200)
      withSettings.services.strata.settings.identity
    )
    (check "settings: a key set in settings wins over its option, lists included (no merging)"
      (
        let
          c =
            (evalConfig {
              services.strata = {
                enable = true;
                token.maxTtl = 7200;
                fs.paths = [ "/srv/a" ];
                admins.users = [ "alice" ];
                settings.identity.STRATA_TOKEN_MAX_TTL = 3600;
                settings.fs.STRATA_FS_ROOTS = [ "/srv/b" ];
                settings.identity.STRATA_ADMIN_USERS = [ "bob" ];
              };
            }).config;
        in
        (env c "strata-identity").STRATA_TOKEN_MAX_TTL == "3600"
        && (env c "strata-fs").STRATA_FS_ROOTS == "/srv/b"
        && (env c "strata-identity").STRATA_ADMIN_USERS == "bob"
        && c.systemd.services.strata-fs.serviceConfig.BindReadOnlyPaths == [
          ""
          "-/srv/b"
        ]
      )
      null
    )
    (check "options: the dedicated options keep their own types and defaults (for the manual)"
      (
        let
          o = minimalOptions.services.strata;
        in
        o.token.maxTtl.type.description == "integer between 1 and 2592000 (both inclusive)"
        && o.token.maxTtl.default == 86400
        && o.fs.paths.default == [ "/srv" ]
        && o.supervisor.failureThreshold.type.description == "integer between 1 and 1000 (both inclusive)"
      )
      minimalOptions.services.strata.token.maxTtl.type.description
    )
    (check "settings: identity's environment is rendered from them"
      (
        (env withSettings "strata-identity") == {
          STRATA_LOG = "warn";
          STRATA_ADMIN_GROUPS = "wheel,ops";
          STRATA_ADMIN_UIDS = "1000,1001";
          STRATA_TOKEN_DEFAULT_TTL = "3600";
          STRATA_TOKEN_MAX_TTL = "7200";
        }
        || full
      )
      (env withSettings "strata-identity")
    )
    (check "settings: fs's environment: roots joined by ':', booleans as 1/0, integers, pass-through keys, its own log filter"
      (
        let
          e = env withSettings "strata-fs";
        in
        e.STRATA_FS_ROOTS == "/srv/a:/srv/b"
        && e.STRATA_FS_ALLOW_HARDLINKS == "1"
        && e.STRATA_FS_LIST_CACHE == "0"
        && e.STRATA_FS_HANDLE_IDLE_SECS == "60"
        && e.STRATA_AUDIT_MAX_BYTES == "1048576"
        && !(e ? STRATA_AUDIT_KEEP)
        && e.STRATA_FUTURE_KNOB == "on"
        && e.STRATA_FUTURE_COUNT == "7"
        && e.STRATA_LOG == "strata_fs=debug,info"
        && !(e ? STRATA_FS_MAX_HANDLES)
        && !(e ? STRATA_MAX_CONNECTIONS)
      )
      (env withSettings "strata-fs")
    )
    (check "settings: the served paths from settings are the ones bound"
      (
        withSettings.systemd.services.strata-fs.serviceConfig.BindReadOnlyPaths == [
          ""
          "-/srv/a"
          "-/srv/b"
        ]
      )
      withSettings.systemd.services.strata-fs.serviceConfig.BindReadOnlyPaths
    )
    (check "settings: the supervisor gets logLevel and its own keys"
      (
        let
          e = env withSettings "strata-supervisor";
        in
        e.STRATA_LOG == "warn"
        && e.STRATA_MAX_CONNECTIONS == "64"
        && e.STRATA_SUPERVISOR_INTERVAL_SECS == "5"
      )
      (env withSettings "strata-supervisor")
    )
  ];

  # --- package.nix, with buildRustPackage replaced by its arguments --------
  # Evaluated, never built: the source fileset is copied to the store (which
  # Debian's nix-bin can do) and looked at; the rest are attributes.
  packageArgs = import ../../package.nix {
    inherit lib;
    makeWrapper = "makeWrapper";
    testers.runNixOSTest = test: test;
    # As nixpkgs' does for a function: its argument is the result itself.
    rustPlatform.buildRustPackage =
      f: lib.fix (self: (if lib.isFunction f then f self else f) // { finalPackage = self; });
  };
  srcEntries = lib.attrNames (builtins.readDir packageArgs.src);
  srcSub = dir: lib.attrNames (builtins.readDir (packageArgs.src + "/${dir}"));
  # lib.fileset needs builtins.readFileType (Nix 2.14); Debian 12's nix-bin
  # is 2.8, so there this check is reported as skipped, not passed.
  canReadFileset = builtins ? readFileType;
  srcChecks = lib.optionals canReadFileset [
    (check "package: the source is the workspace's crates and the units, nothing else"
      (
        srcEntries == [
          "Cargo.lock"
          "Cargo.toml"
          "bench"
          "ctl"
          "services"
          "shared"
          "systemd"
          "tests"
          "tools"
        ]
        && srcSub "tests" == [ "adversarial" ]
        && srcSub "tools" == [ "loadgen" ]
      )
      srcEntries
    )
  ];
  skipped = lib.optional (!canReadFileset) {
    name = "package: the source is the workspace's crates and the units, nothing else";
    reason = "lib.fileset needs Nix 2.14 or later (builtins.readFileType); this is Nix ${builtins.nixVersion}";
  };
  packageChecks = srcChecks ++ [
    (check "package: outputs bin (strata-ctl, the default), out (daemons, units), tools"
      (
        packageArgs.outputs == [
          "bin"
          "out"
          "tools"
        ]
        && packageArgs.meta.outputsToInstall == [ "bin" ]
        && packageArgs.meta.mainProgram == "strata-ctl"
      )
      packageArgs.outputs
    )
    (check "package: strictDeps, its tests run, meta.homepage"
      (packageArgs.strictDeps && packageArgs.doCheck && packageArgs.meta ? homepage)
      null
    )
    (check "package: passthru.tests are the VM tests, run on this very package"
      (
        packageArgs.passthru.tests.basic.name == "strata-basic"
        && lib.attrNames packageArgs.passthru.tests == [
          "basic"
          "faults"
          "hardening"
          "non-admin"
          "persistence"
          "watchdog"
        ]
      )
      (lib.attrNames packageArgs.passthru.tests)
    )
  ];

  # --- disabled ------------------------------------------------------------
  disabled = (evalConfig { services.strata.enable = false; }).config;
  disabledChecks = [
    (check "disabled: nothing is configured"
      (
        !(lib.elem fakePackage.out.outPath (map toString disabled.systemd.packages))
        && !(disabled.systemd.services ? strata-fs)
        && !(disabled.systemd.targets ? strata)
        && failedAssertions disabled == [ ]
      )
      null
    )
  ];

  # --- configurations the assertions must refuse ---------------------------
  refusedBy =
    name: settings: needle:
    let
      c = (evalConfig { services.strata = { enable = true; } // settings; }).config;
      msgs = failedAssertions c;
    in
    check "refused: ${name}" (msgs != [ ] && lib.all (lib.hasInfix needle) msgs) msgs;

  assertionChecks = [
    (refusedBy "a relative served path" { fs.paths = [ "srv/data" ]; } ''"srv/data"'')
    (refusedBy "no served path" { fs.paths = [ ]; } "is empty")
    (refusedBy "defaultTtl above maxTtl" {
      token.defaultTtl = 7200;
      token.maxTtl = 3600;
    } "Lower defaultTtl or raise maxTtl")
    (refusedBy "a served path with ':'" { fs.paths = [ "/srv/a:b" ]; } ''"/srv/a:b"'')
    (refusedBy "a trailing '/'" { fs.paths = [ "/srv/data/" ]; } "normalised")
    (refusedBy "a '..' component" { fs.paths = [ "/srv/../etc" ]; } "normalised")
    (refusedBy "a served path listed twice" {
      fs.paths = [
        "/srv"
        "/srv"
      ];
    } "more than once")
    (
      let
        c = (evalConfig { services.strata = { enable = true; fs.paths = [ "/" ]; }; }).config;
      in
      check "warned: serving /" (
        failedAssertions c == [ ] && lib.any (lib.hasInfix ''contains "/"'') (ourWarnings c)
      ) (ourWarnings c)
    )
  ];

  # --- definitions the module system must refuse ---------------------------
  rejected =
    name: configuration:
    check "rejected: ${name}" (!(evaluates (evalConfig configuration).config)) null;

  typeChecks = [
    (rejected "maxTtl = 0" { services.strata = { enable = true; token.maxTtl = 0; }; })
    (rejected "maxTtl above identity's 30-day ceiling" { services.strata = { enable = true; token.maxTtl = 2592001; }; })
    (rejected "defaultTtl = 0" { services.strata = { enable = true; token.defaultTtl = 0; }; })
    (rejected "defaultTtl above identity's ceiling" { services.strata = { enable = true; token.defaultTtl = 2592001; }; })
    (rejected "a supervisor interval above 3600 s" { services.strata = { enable = true; supervisor.interval = 3601; }; })
    (rejected "a supervisor interval of 0" { services.strata = { enable = true; supervisor.interval = 0; }; })
    (rejected "a failure threshold above 1000" { services.strata = { enable = true; supervisor.failureThreshold = 1001; }; })
    (rejected "a failure threshold of 0" { services.strata = { enable = true; supervisor.failureThreshold = 0; }; })
    (rejected "settings: STRATA_MAX_CONNECTIONS = 0" { services.strata = { enable = true; settings.fs.STRATA_MAX_CONNECTIONS = 0; }; })
    (rejected "settings: more handles than fs accepts" { services.strata = { enable = true; settings.fs.STRATA_FS_MAX_HANDLES = 1048577; }; })
    (rejected "settings: a frame timeout below 10 ms" { services.strata = { enable = true; settings.identity.STRATA_FRAME_TIMEOUT_MS = 9; }; })
    (rejected "settings: a boolean given as a string" { services.strata = { enable = true; settings.fs.STRATA_FS_ALLOW_HARDLINKS = "yes"; }; })
    (rejected "settings: a list under a key the module does not know" { services.strata = { enable = true; settings.fs.STRATA_FOO = [ "a" ]; }; })
    (rejected "an admin list written as one string" { services.strata = { enable = true; admins.users = [ "alice,bob" ]; }; })
    (rejected "an admin given by uid in the names list" { services.strata = { enable = true; admins.groups = [ "1000" ]; }; })
    (rejected "uid 4294967295 ((uid_t) -1) as an admin" { services.strata = { enable = true; settings.identity.STRATA_ADMIN_UIDS = [ 4294967295 ]; }; })
    (check "accepted: the bounds themselves (30 days, 1 s, 3600 s, 1000)" (evaluates
      (evalConfig {
        services.strata = {
          enable = true;
          token.maxTtl = 2592000;
          token.defaultTtl = 1;
          supervisor.interval = 3600;
          supervisor.failureThreshold = 1000;
        };
      }).config
    ) null)
    (rejected "a negative supervisor interval" { services.strata = { enable = true; supervisor.interval = -1; }; })
    (rejected "an empty log level" { services.strata = { enable = true; logLevel = ""; }; })
    (rejected "a served path that is not a list" { services.strata = { enable = true; fs.paths = "/srv"; }; })
    (rejected "an option Strata does not declare" { services.strata = { enable = true; bogus = 1; }; })
    # The harness itself: a unit setting NixOS does not declare must fail.
    (rejected "a unit option NixOS does not declare" {
      services.strata.enable = true;
      systemd.services.strata-fs.notAnOption = 1;
    })
    (rejected "an invalid serviceConfig value (Restart = \"sometimes\")" {
      services.strata.enable = true;
      systemd.services.strata-fs.serviceConfig.Restart = "sometimes";
    })
    (check "sanity: a clean configuration evaluates" (evaluates minimal) null)
  ];

  # --- full nixpkgs only: the rendered drop-ins, and honest stubs ------------
  fullChecks = lib.optionals full (
    let
      units = nontrivial.systemd.units;
      fsText = units."strata-fs.service".text or "";
      realOptions = (evalConfig { }).options;
      # (Without the module system's own _module.* options.)
      stubDocs = lib.filter (o: !(lib.elem "_module" o.loc)) (
        lib.optionAttrSetToDocList (lib.evalModules { modules = [ ./nixos-stubs.nix ]; }).options
      );
      # Walks the real option tree along a documented location, stepping into
      # submodules ("<name>" for attrsOf).
      find =
        node: loc:
        if loc == [ ] then
          node
        else if lib.isOption node then
          let
            sub = node.type.getSubOptions [ ];
          in
          find sub (if lib.head loc == "<name>" then lib.tail loc else loc)
        else if node ? ${lib.head loc} then
          find node.${lib.head loc} (lib.tail loc)
        else
          null;
      mismatches = lib.filter (
        o:
        let
          real = find realOptions o.loc;
        in
        real == null || !(lib.isOption real) || real.type.description != o.type
      ) stubDocs;
    in
    [
      (check "nixos: strata-fs.service drop-in binds the served paths" (
        lib.hasInfix "BindReadOnlyPaths=\nBindReadOnlyPaths=-/srv/data\nBindReadOnlyPaths=-/var/lib/reports\n" fsText
      ) fsText)
      (check "nixos: strata-fs.service drop-in sets STRATA_FS_ROOTS" (lib.hasInfix "STRATA_FS_ROOTS=/srv/data:/var/lib/reports" fsText) fsText)
      (check "nixos: strata.target is linked into multi-user.target" (lib.elem "multi-user.target" units."strata.target".wantedBy) null)
      (check "nixos: every stubbed option exists in NixOS with the same type" (mismatches == [ ]) (
        map (o: {
          inherit (o) name type;
        }) mismatches
      ))
    ]
  );

  checks =
    minimalChecks
    ++ nontrivialChecks
    ++ homeChecks
    ++ settingsChecks
    ++ packageChecks
    ++ disabledChecks ++ assertionChecks ++ typeChecks ++ fullChecks;
in
{
  inherit mode;
  nixpkgs = lib.trivial.version;
  passed = map (c: c.name) (lib.filter (c: c.ok) checks);
  failed = map (c: { inherit (c) name detail; }) (lib.filter (c: !c.ok) checks);
  inherit skipped;
}
