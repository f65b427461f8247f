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
        # (Strata's files only: a full NixOS has many more, with packages.)
        (lib.mapAttrs (_: f: f.text) (lib.filterAttrs (n: _: lib.hasPrefix "strata/" n) c.environment.etc))
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
    (check "minimal: the sockets are wanted by strata.target"
      (lib.all (s: lib.elem "strata.target" minimal.systemd.sockets.${s}.wantedBy) [
        "strata-identity"
        "strata-identity-credentials"
        "strata-fs"
        "strata-supervisor"
        "strata-registry"
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
          # fs's roots: identity refuses a grant outside them.
          STRATA_GRANT_ROOTS = "/srv";
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
          STRATA_GRANT_ROOTS = "/srv/a:/srv/b";
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
    coreutils = "/coreutils";
    makeWrapper = "makeWrapper";
    protobuf = "protobuf";
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
          "fleet"
          "services"
          "shared"
          "systemd"
          "tests"
          "tools"
        ]
        && srcSub "tests" == [ "adversarial" ]
        && srcSub "tools" == [
          "loadgen"
          "v032-client"
        ]
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
          "fleet"
          "grants"
          "hardening"
          "non-admin"
          "persistence"
          "watchdog"
        ]
      )
      (lib.attrNames packageArgs.passthru.tests)
    )
  ];

  # --- grants (modules/grants.nix) ------------------------------------------
  strataCtl = "${fakePackage.bin.outPath}/bin/strata-ctl";
  withGrants =
    (evalConfig {
      services.strata = {
        enable = true;
        fs.paths = [
          "/srv"
          "/var/lib/reports"
        ];
        grants = {
          # Everything by default: unit reader.service, service fs, no TTL.
          reader = {
            actions = [
              "list"
              "read"
            ];
            pathPrefix = "/srv/data";
          };
          # Two grants for one unit of another name; actions listed twice.
          exporter-in = {
            unit = "reports-exporter.service";
            actions = [
              "list"
              "stat"
              "list"
            ];
            pathPrefix = "/var/lib/reports";
            ttl = 600;
          };
          exporter-conf = {
            unit = "reports-exporter.service";
            actions = [ "read" ];
            pathPrefix = "/srv/conf";
          };
        };
      };
      # The consumer's own definition, which the module must leave as it is
      # and only append to.
      systemd.services.reports-exporter = {
        after = [ "network.target" ];
        serviceConfig = {
          ExecStart = "/bin/exporter";
          DynamicUser = true;
          LoadCredential = [ "tls:/etc/exporter/tls.pem" ];
          ExecStopPost = [ "/bin/exporter --cleanup" ];
        };
      };
    }).config;
  etcJson = c: name: builtins.fromJSON c.environment.etc."strata/grants.d/${name}.json".text;
  unitOf = c: name: c.systemd.services.${name};
  grantsChecks = [
    (check "grants: no assertion fails" (failedAssertions withGrants == [ ]) (failedAssertions withGrants))
    (check "grants: one file per grant, nothing else under strata/"
      (
        lib.filter (lib.hasPrefix "strata/") (lib.attrNames withGrants.environment.etc) == [
          "strata/grants.d/exporter-conf.json"
          "strata/grants.d/exporter-in.json"
          "strata/grants.d/reader.json"
        ]
      )
      (lib.attrNames withGrants.environment.etc)
    )
    (check "grants: the file of a grant with the defaults: unit <name>.service, service fs, no ttl_seconds"
      (
        etcJson withGrants "reader" == {
          unit = "reader.service";
          service = "fs";
          actions = [
            "list"
            "read"
          ];
          path_prefix = "/srv/data";
        }
      )
      (etcJson withGrants "reader")
    )
    (check "grants: the file of a grant with unit and ttl; each action once, in order"
      (
        etcJson withGrants "exporter-in" == {
          unit = "reports-exporter.service";
          service = "fs";
          actions = [
            "list"
            "stat"
          ];
          path_prefix = "/var/lib/reports";
          ttl_seconds = 600;
        }
      )
      (etcJson withGrants "exporter-in")
    )
    (check "grants: the consumer gets the credential, the socket ordering and the revocation at stop"
      (
        let
          u = unitOf withGrants "reader";
        in
        u.serviceConfig.LoadCredential == [ "strata-reader:/run/strata/credentials.sock" ]
        && u.serviceConfig.ExecStopPost == [ "+${strataCtl} revoke-unit %n" ]
        && u.wants == [ "strata-identity-credentials.socket" ]
        && u.after == [ "strata-identity-credentials.socket" ]
      )
      (unitOf withGrants "reader")
    )
    (check "grants: a unit of two grants gets both credentials and one revocation, appended to its own settings"
      (
        let
          u = unitOf withGrants "reports-exporter";
        in
        lib.sort lib.lessThan u.serviceConfig.LoadCredential == [
          "strata-exporter-conf:/run/strata/credentials.sock"
          "strata-exporter-in:/run/strata/credentials.sock"
          "tls:/etc/exporter/tls.pem"
        ]
        && lib.sort lib.lessThan u.serviceConfig.ExecStopPost == [
          "+${strataCtl} revoke-unit %n"
          "/bin/exporter --cleanup"
        ]
        && lib.sort lib.lessThan u.after == [
          "network.target"
          "strata-identity-credentials.socket"
        ]
        && u.serviceConfig.ExecStart == "/bin/exporter"
        && u.serviceConfig.DynamicUser
      )
      (unitOf withGrants "reports-exporter").serviceConfig
    )
    (check "grants: the module adds nothing else to the consumer (no override, no environment)"
      (
        # (A full NixOS adds its own defaults to every service.)
        (
          lib.attrNames (unitOf withGrants "reader").serviceConfig == [
            "ExecStopPost"
            "LoadCredential"
          ]
          || full
        )
        && ((unitOf withGrants "reader").environment == { } || full)
      )
      (unitOf withGrants "reader")
    )
    (check "grants: a changed grant restarts its consumer, not the others"
      (
        let
          changed =
            (evalConfig {
              services.strata = {
                enable = true;
                grants.reader = {
                  actions = [ "list" ];
                  pathPrefix = "/srv/data";
                };
                grants.other = {
                  actions = [ "list" ];
                  pathPrefix = "/srv/other";
                };
              };
            }).config;
          same =
            (evalConfig {
              services.strata = {
                enable = true;
                grants.reader = {
                  actions = [ "list" ];
                  pathPrefix = "/srv/data";
                };
                grants.other = {
                  actions = [ "list" ];
                  pathPrefix = "/srv/elsewhere";
                };
              };
            }).config;
        in
        (unitOf changed "reader").restartTriggers == (unitOf same "reader").restartTriggers
        && (unitOf changed "other").restartTriggers != (unitOf same "other").restartTriggers
        && (unitOf withGrants "reader").restartTriggers != [ ]
      )
      null
    )
    (check "grants: identity is reloaded, not restarted, when the grants change"
      (
        let
          id = c: unitOf c "strata-identity";
          renamed =
            (evalConfig {
              services.strata = {
                enable = true;
                grants.reader2 = {
                  unit = "reader.service";
                  actions = [
                    "list"
                    "read"
                  ];
                  pathPrefix = "/srv/data";
                };
              };
            }).config;
        in
        lib.length (id withGrants).reloadTriggers == 1
        && (id withGrants).reloadTriggers != (id minimal).reloadTriggers
        && (id renamed).reloadTriggers != (id minimal).reloadTriggers
        && (id withGrants).restartTriggers == [ ]
      )
      (unitOf withGrants "strata-identity").reloadTriggers
    )
    (check "grants: identity refuses grants outside fs's roots (STRATA_GRANT_ROOTS)"
      ((env withGrants "strata-identity").STRATA_GRANT_ROOTS == "/srv:/var/lib/reports")
      (env withGrants "strata-identity")
    )
    (check "grants: none declared, no file and no consumer"
      (
        !(lib.any (lib.hasPrefix "strata/") (lib.attrNames minimal.environment.etc))
        && !(minimal.systemd.services ? reader)
      )
      null
    )
    (check "grants: disabled, nothing is configured although grants are declared"
      (
        let
          c =
            (evalConfig {
              services.strata.grants.reader = {
                actions = [ "list" ];
                pathPrefix = "/srv/data";
              };
            }).config;
        in
        c.environment.etc == { } && !(c.systemd.services ? reader)
      )
      null
    )
    (check "grants: accepted: a 64-character name, a unit with '@', ':' and '\\', prefix = a served root, all five actions and delegate"
      (evaluates
        (evalConfig {
          services.strata = {
            enable = true;
            grants.${lib.concatStrings (lib.replicate 64 "a")} = {
              unit = "a:b\\x2dc@d_e.f-g.service";
              actions = [
                "open"
                "read"
                "list"
                "stat"
                "close"
                "delegate"
              ];
              pathPrefix = "/srv";
              ttl = 86400;
            };
          };
        }).config
      )
      null
    )
    (refusedByGrant "a prefix outside fs's roots" { pathPrefix = "/etc"; } "outside every directory fs serves")
    (refusedByGrant "a prefix that only shares a root's first letters" { pathPrefix = "/srvx"; } "outside every directory fs serves")
    (refusedByGrant "a ttl above maxTtl" { ttl = 86401; } "larger than")
    (refusedByGrant "a grant for Strata's own fs" { unit = "strata-fs.service"; } "Strata's own")
    (rejectedGrant "a relative prefix" { pathPrefix = "srv/data"; })
    (rejectedGrant "a prefix with a trailing '/'" { pathPrefix = "/srv/data/"; })
    (rejectedGrant "a prefix with '..'" { pathPrefix = "/srv/../etc"; })
    (rejectedGrant "a prefix with '.'" { pathPrefix = "/srv/./data"; })
    (rejectedGrant "a prefix with '//'" { pathPrefix = "/srv//data"; })
    (rejectedGrant "an empty prefix" { pathPrefix = ""; })
    (rejectedGrant "no prefix" { pathPrefix = null; })
    (rejectedGrant "an action fs does not have" { actions = [ "write" ]; })
    (rejectedGrant "no action" { actions = [ ]; })
    (rejectedGrant "actions as one string" { actions = "list,read"; })
    (rejectedGrant "a service other than fs" { service = "supervisor"; })
    (rejectedGrant "a unit that is not a service" { unit = "reader.socket"; })
    (rejectedGrant "a unit starting with '.'" { unit = ".reader.service"; })
    (rejectedGrant "a unit with '/'" { unit = "../reader.service"; })
    (rejectedGrant "a unit name of 256 characters" { unit = lib.concatStrings (lib.replicate 248 "u") + ".service"; })
    (rejectedGrant "ttl = 0" { ttl = 0; })
    (rejectedGrant "a ttl above identity's 30-day ceiling" { ttl = 2592001; })
    (rejectedGrant "a field identity does not know" { holder = "x"; })
    (rejectedGrant "setting the read-only name" { name = "other"; })
    (rejectedGrantName "an upper-case name" "Reader")
    (rejectedGrantName "a name with '.'" "reader.v2")
    (rejectedGrantName "a name starting with '-'" "-reader")
    (rejectedGrantName "a name with '/'" "a/b")
    (rejectedGrantName "a name of 65 characters" (lib.concatStrings (lib.replicate 65 "a")))
    (check "grants: sanity: the grant the rejections start from evaluates" (evaluates (evalConfig (grantConfig "reader" { })).config) null)
  ];

  # --- the VM test nixos-tests/grants.nix, as far as the stubs go ----------
  # Its machine, evaluated with the stubs and the few options the test
  # framework and common.nix set besides the module's (declared loosely
  # here, not in the stubs: the module does not set them). What the test
  # script relies on is checked: the rendered grant, the units, and the
  # specialisation it switches to (identity reloaded, the consumer of the
  # unchanged grant not restarted).
  vmTest = import ../../nixos-tests/grants.nix {
    testers.runNixOSTest = test: test;
    common = import ../../nixos-tests/common.nix { package = fakePackage; };
  };
  testNodeOptions =
    { lib, ... }:
    let
      inherit (lib) mkOption types;
      loose = mkOption {
        type = types.anything;
        default = null;
      };
    in
    {
      options = {
        services.journald.settings = loose;
        systemd.tmpfiles.rules = mkOption {
          type = types.listOf types.str;
          default = [ ];
        };
        environment.etc = mkOption {
          type = types.attrsOf (types.submodule { options.source = loose; });
        };
        users.users = mkOption {
          type = types.attrsOf (types.submodule { options.isNormalUser = loose; });
        };
        systemd.services = mkOption {
          type = types.attrsOf (types.submodule { options.description = loose; });
        };
        specialisation = mkOption {
          type = types.attrsOf (types.submodule { options.configuration = mkOption { type = types.deferredModule; }; });
          default = { };
        };
      };
    };
  evalTestNodeWith =
    node: extra:
    (lib.evalModules {
      modules = [
        ./nixos-stubs.nix
        testNodeOptions
        {
          _module.args.pkgs = fakePkgs // {
            runtimeShell = "/bin/sh";
          };
        }
      ]
      ++ node
      ++ extra;
    }).config;
  evalTestNode = evalTestNodeWith [ vmTest.nodes.machine ];
  testNode = evalTestNode [ ];
  testNodeMore = evalTestNode [ testNode.specialisation.more.configuration ];
  vmTestChecks = lib.optionals (!full) [
    (check "vm test grants: its machine evaluates, no assertion fails" (
      evaluates testNode && failedAssertions testNode == [ ]
    ) (failedAssertions testNode))
    (check "vm test grants: the grant file the script expects"
      (
        etcJson testNode "reader" == {
          unit = "reader.service";
          service = "fs";
          actions = [
            "list"
            "stat"
            "open"
            "read"
          ];
          path_prefix = "/srv/granted";
          ttl_seconds = 600;
        }
      )
      (etcJson testNode "reader")
    )
    (check "vm test grants: reader gets the credential and the revocation; thief only its own line"
      (
        (unitOf testNode "reader").serviceConfig.LoadCredential == [ "strata-reader:/run/strata/credentials.sock" ]
        && lib.length (unitOf testNode "reader").serviceConfig.ExecStopPost == 1
        && (unitOf testNode "thief").serviceConfig.LoadCredential == [ "strata-reader:/run/strata/credentials.sock" ]
        && !((unitOf testNode "thief").serviceConfig ? ExecStopPost)
        && (unitOf testNode "reader").serviceConfig.DynamicUser
      )
      null
    )
    (check "vm test grants: the specialisation adds a grant, reloads identity, and leaves reader's unit as it is"
      (
        etcJson testNodeMore "second" == {
          unit = "second.service";
          service = "fs";
          actions = [ "list" ];
          path_prefix = "/srv/granted";
        }
        && (unitOf testNodeMore "strata-identity").reloadTriggers != (unitOf testNode "strata-identity").reloadTriggers
        && unitOf testNodeMore "reader" == unitOf testNode "reader"
        && (unitOf testNodeMore "second").serviceConfig.LoadCredential == [ "strata-second:/run/strata/credentials.sock" ]
      )
      null
    )
    (check "vm test grants: the script runs the subtests of scenario 21" (lib.all (t: lib.hasInfix t vmTest.testScript) [
      "lists its prefix with plain strata-ctl"
      "stopping the consumer revokes its token"
      "a restart gets a fresh token"
      "is not the grant's unit gets no token"
      "reloads identity"
    ]) null)
  ];

  # --- fleet (services.strata.fleet, docs/fleet.md) --------------------------
  rootKey = "6yuNSpOB+WfYkR8l0fLyJCtc+oWHtbUP9BgCq8A+SWc=";
  fleetBase = {
    enable = true;
    name = "prod";
    nodeId = "node-1";
    rootPublicKey = rootKey;
    endorsementFile = "/var/lib/strata-fleet/endorsement";
    etcd.endpoints = [
      "http://192.168.1.1:2379"
      "http://192.168.1.2:2379"
      "http://[fd00::3]:2379"
    ];
  };
  fleetConfig =
    fleet:
    (evalConfig {
      services.strata = {
        enable = true;
        # (Deep: { etcd.tls.caFile = …; } keeps the base's endpoints.)
        fleet = lib.recursiveUpdate fleetBase fleet;
      };
    }).config;
  fleetTls = {
    etcd = {
      endpoints = [
        "https://10.0.0.11:2379"
        "https://10.0.0.12:2379"
      ];
      tls = {
        caFile = "/etc/etcd/ca.pem";
        certFile = "/etc/strata/fleet/etcd-client.pem";
        keyFile = "/run/keys/strata-etcd-client.key";
      };
    };
  };
  withFleet = fleetConfig { };
  withFleetTls = fleetConfig fleetTls;
  # Evaluates cleanly, the units' [Service] settings included.
  fleetEvaluates =
    c:
    (builtins.tryEval (
      builtins.deepSeq [
        c.services.strata.fleet
        c.systemd.services.strata-identity.environment
        c.systemd.services.strata-identity.serviceConfig
        c.systemd.services.strata-fs.environment
        c.systemd.services.strata-fs.serviceConfig
        (failedAssertions c)
      ] true
    )).success;
  # Only the variables the fleet adds (a full NixOS adds PATH and others).
  fleetVars = c: unit: lib.filterAttrs (n: _: lib.hasPrefix "STRATA_FLEET_" n || n == "STRATA_NODE_ID") (env c unit);
  fleetUnit = c: unit: c.systemd.services.${unit}.serviceConfig;

  # The Debian drop-in, systemd/strata-fleet.conf: its active lines, as
  # { key = [ values in order ]; }.
  dropIn =
    let
      lines = lib.filter (l: l != "" && !lib.hasPrefix "#" l && !lib.hasPrefix "[" l) (
        lib.splitString "\n" (builtins.readFile ../../systemd/strata-fleet.conf)
      );
      pairs = map (
        l:
        let
          m = builtins.match "([A-Za-z]+)=(.*)" l;
        in
        {
          key = lib.head m;
          value = lib.last m;
        }
      ) lines;
    in
    lib.foldl' (acc: p: acc // { ${p.key} = (acc.${p.key} or [ ]) ++ [ p.value ]; }) { } pairs;

  refusedByFleet =
    name: fleet: needle:
    let
      msgs = failedAssertions (fleetConfig fleet);
    in
    check "fleet: refused: ${name}" (msgs != [ ] && lib.all (lib.hasInfix needle) msgs) msgs;
  rejectedFleet =
    name: fleet: check "fleet: rejected: ${name}" (!(fleetEvaluates (fleetConfig fleet))) null;
  acceptedFleet =
    name: fleet:
    let
      c = fleetConfig fleet;
    in
    check "fleet: accepted: ${name}" (fleetEvaluates c && failedAssertions c == [ ]) (
      if fleetEvaluates c then failedAssertions c else "does not evaluate"
    );
  endpoint = e: { etcd.endpoints = [ e ]; };

  fleetChecks = [
    (check "fleet: no assertion fails" (failedAssertions withFleet == [ ]) (failedAssertions withFleet))
    (check "fleet: identity gets the contract's variables, the endorsement from its credentials directory"
      (
        fleetVars withFleet "strata-identity" == {
          STRATA_FLEET_NAME = "prod";
          STRATA_FLEET_ROOT_PUBLIC_KEY = rootKey;
          STRATA_FLEET_ENDORSEMENT_FILE = "%d/fleet-endorsement";
          STRATA_FLEET_ETCD_ENDPOINTS = "http://192.168.1.1:2379,http://192.168.1.2:2379,http://[fd00::3]:2379";
          STRATA_FLEET_MAX_STALENESS_SECS = "5";
          STRATA_NODE_ID = "node-1";
        }
      )
      (fleetVars withFleet "strata-identity")
    )
    (check "fleet: fs gets the same, without the endorsement (it ignores it)"
      (fleetVars withFleet "strata-fs" == removeAttrs (fleetVars withFleet "strata-identity") [ "STRATA_FLEET_ENDORSEMENT_FILE" ])
      (fleetVars withFleet "strata-fs")
    )
    (check "fleet: the endorsement is loaded as a credential of identity only (no chmod needed)"
      (
        (fleetUnit withFleet "strata-identity").LoadCredential == [ "fleet-endorsement:/var/lib/strata-fleet/endorsement" ]
        && !((fleetUnit withFleet "strata-fs") ? LoadCredential)
      )
      (fleetUnit withFleet "strata-identity")
    )
    (check "fleet: both units get the host's network, TCP, and the endpoints' addresses only"
      (lib.all (
        u:
        let
          sc = fleetUnit withFleet u;
        in
        sc.PrivateNetwork == false
        && sc.RestrictAddressFamilies == [
          ""
          "AF_UNIX AF_INET AF_INET6"
        ]
        && sc.IPAddressAllow == [
          "192.168.1.1"
          "192.168.1.2"
          "fd00::3"
        ]
        && !(sc ? IPAddressDeny)
      ) [ "strata-identity" "strata-fs" ])
      (fleetUnit withFleet "strata-fs")
    )
    (check "fleet: identity and fs are started with strata.target"
      (lib.all (u: withFleet.systemd.services.${u}.wantedBy == [ "strata.target" ]) [ "strata-identity" "strata-fs" ])
      null
    )
    (check "fleet: maxStaleness reaches both services"
      (
        let
          c = fleetConfig { maxStaleness = 30; };
        in
        (env c "strata-identity").STRATA_FLEET_MAX_STALENESS_SECS == "30"
        && (env c "strata-fs").STRATA_FLEET_MAX_STALENESS_SECS == "30"
      )
      null
    )
    (check "fleet: TLS files are credentials of both units, the variables point into %d"
      (
        failedAssertions withFleetTls == [ ]
        && lib.all (
          u:
          let
            e = env withFleetTls u;
          in
          e.STRATA_FLEET_ETCD_CA_FILE == "%d/fleet-etcd-ca"
          && e.STRATA_FLEET_ETCD_CERT_FILE == "%d/fleet-etcd-cert"
          && e.STRATA_FLEET_ETCD_KEY_FILE == "%d/fleet-etcd-key"
          && e.STRATA_FLEET_ETCD_ENDPOINTS == "https://10.0.0.11:2379,https://10.0.0.12:2379"
        ) [ "strata-identity" "strata-fs" ]
        && lib.sort lib.lessThan (fleetUnit withFleetTls "strata-fs").LoadCredential == [
          "fleet-etcd-ca:/etc/etcd/ca.pem"
          "fleet-etcd-cert:/etc/strata/fleet/etcd-client.pem"
          "fleet-etcd-key:/run/keys/strata-etcd-client.key"
        ]
        && lib.sort lib.lessThan (fleetUnit withFleetTls "strata-identity").LoadCredential == [
          "fleet-endorsement:/var/lib/strata-fleet/endorsement"
          "fleet-etcd-ca:/etc/etcd/ca.pem"
          "fleet-etcd-cert:/etc/strata/fleet/etcd-client.pem"
          "fleet-etcd-key:/run/keys/strata-etcd-client.key"
        ]
      )
      [
        (fleetUnit withFleetTls "strata-identity")
        (failedAssertions withFleetTls)
      ]
    )
    (check "fleet: host-name endpoints with allowedAddresses: those addresses are allowed"
      (
        let
          c = fleetConfig {
            etcd.endpoints = [
              "http://etcd-1.example.org:2379"
              "http://etcd-2.example.org:2379"
            ];
            etcd.allowedAddresses = [
              "10.0.0.0/24"
              "localhost"
            ];
          };
        in
        failedAssertions c == [ ]
        && (fleetUnit c "strata-fs").IPAddressAllow == [
          "10.0.0.0/24"
          "localhost"
        ]
      )
      null
    )
    (check "fleet: off (the default), nothing of it reaches the units, even with its options set"
      (
        let
          c =
            (evalConfig {
              services.strata = {
                enable = true;
                fleet = fleetBase // {
                  enable = false;
                };
              };
            }).config;
        in
        failedAssertions c == [ ]
        && fleetVars c "strata-identity" == { }
        && fleetVars c "strata-fs" == { }
        && !((fleetUnit c "strata-identity") ? PrivateNetwork)
        && !((fleetUnit c "strata-fs") ? PrivateNetwork)
        && !((fleetUnit c "strata-fs") ? IPAddressAllow)
        && !((fleetUnit c "strata-identity") ? LoadCredential)
        && (c.systemd.services.strata-identity.wantedBy or [ ]) == [ ]
        && !(minimal.systemd.services.strata-fs.serviceConfig ? PrivateNetwork)
      )
      null
    )
    (check "fleet: the Debian drop-in (systemd/strata-fleet.conf) opens the network as the module does"
      (
        dropIn.EnvironmentFile == [ "/etc/strata/fleet.env" ]
        && dropIn.PrivateNetwork == [ "no" ]
        && dropIn.RestrictAddressFamilies == (fleetUnit withFleet "strata-fs").RestrictAddressFamilies
        && dropIn.LoadCredential == [ "fleet-endorsement:/etc/strata/fleet/endorsement" ]
        && dropIn.Environment == [ "STRATA_FLEET_ENDORSEMENT_FILE=${(env withFleet "strata-identity").STRATA_FLEET_ENDORSEMENT_FILE}" ]
        # Fail closed: the unit's IPAddressDeny=any stays, nothing allowed
        # until the operator lists etcd's members.
        && !(dropIn ? IPAddressAllow)
        && !(dropIn ? IPAddressDeny)
      )
      dropIn
    )
    (refusedByFleet "no name" { name = null; } "services.strata.fleet.name")
    (refusedByFleet "no node id" { nodeId = null; } "services.strata.fleet.nodeId")
    (refusedByFleet "no root public key" { rootPublicKey = null; } "services.strata.fleet.rootPublicKey")
    (refusedByFleet "no endorsement" { endorsementFile = null; } "services.strata.fleet.endorsementFile")
    (refusedByFleet "no endpoints" { etcd.endpoints = null; } "services.strata.fleet.etcd.endpoints")
    (
      let
        msgs = failedAssertions (
          (evalConfig {
            services.strata = {
              enable = true;
              fleet.enable = true;
            };
          }).config
        );
      in
      check "fleet: refused: enable alone names all five missing options in one message" (
        lib.length msgs == 1
        && lib.all (n: lib.hasInfix "services.strata.fleet.${n}" (lib.head msgs)) [
          "name"
          "nodeId"
          "rootPublicKey"
          "endorsementFile"
          "etcd.endpoints"
        ]
      ) msgs
    )
    (refusedByFleet "a client certificate without its key" {
      etcd = fleetTls.etcd // {
        tls = removeAttrs fleetTls.etcd.tls [ "keyFile" ];
      };
    } "set both or neither")
    (refusedByFleet "http and https endpoints mixed" {
      etcd.endpoints = [
        "http://10.0.0.11:2379"
        "https://10.0.0.12:2379"
      ];
      etcd.tls.caFile = "/etc/etcd/ca.pem";
    } "mixes http:// and https://")
    (refusedByFleet "TLS files with http:// endpoints" {
      etcd.tls.caFile = "/etc/etcd/ca.pem";
    } "plain text")
    (refusedByFleet "https:// endpoints without a CA" {
      etcd.endpoints = [ "https://10.0.0.11:2379" ];
    } "caFile is not set")
    (refusedByFleet "host-name endpoints without allowedAddresses" {
      etcd.endpoints = [
        "http://etcd-1.example.org:2379"
        "http://10.0.0.12:2379"
      ];
    } "etcd-1.example.org")
    (
      let
        msgs = failedAssertions (
          (evalConfig {
            services.strata = {
              enable = true;
              fleet = fleetBase;
              settings.fs.STRATA_NODE_ID = "other";
              settings.identity.STRATA_FLEET_NAME = "staging";
            };
          }).config
        );
      in
      check "fleet: refused: settings that set the fleet's variables too" (
        msgs != [ ]
        && lib.all (
          m: lib.hasInfix "settings.fs.STRATA_NODE_ID" m && lib.hasInfix "settings.identity.STRATA_FLEET_NAME" m
        ) msgs
      ) msgs
    )
    (rejectedFleet "an upper-case fleet name" { name = "Prod"; })
    (rejectedFleet "a fleet name starting with '-'" { name = "-prod"; })
    (rejectedFleet "a fleet name ending with '-'" { name = "prod-"; })
    (rejectedFleet "a fleet name with '.'" { name = "prod.eu"; })
    (rejectedFleet "an empty fleet name" { name = ""; })
    (rejectedFleet "a fleet name of 64 bytes" { name = lib.concatStrings (lib.replicate 64 "a"); })
    (rejectedFleet "an upper-case node id" { nodeId = "Node-1"; })
    (rejectedFleet "a node id with '_'" { nodeId = "node_1"; })
    (rejectedFleet "a node id with an empty label" { nodeId = "node..eu"; })
    (rejectedFleet "a node id label ending with '-'" { nodeId = "node-.eu"; })
    (rejectedFleet "a node id of 254 bytes" { nodeId = lib.concatStringsSep "." (lib.replicate 126 "a") + ".bc"; })
    (rejectedFleet "a root public key of 31 bytes" { rootPublicKey = "6yuNSpOB+WfYkR8l0fLyJCtc+oWHtbUP9BgCq8A+SQ=="; })
    (rejectedFleet "a root public key without its padding" { rootPublicKey = "6yuNSpOB+WfYkR8l0fLyJCtc+oWHtbUP9BgCq8A+SWc"; })
    (rejectedFleet "a root public key whose last character carries bits past 32 bytes" {
      rootPublicKey = "6yuNSpOB+WfYkR8l0fLyJCtc+oWHtbUP9BgCq8A+SWd=";
    })
    (rejectedFleet "a root public key in URL-safe base64" { rootPublicKey = "6yuNSpOB-WfYkR8l0fLyJCtc_oWHtbUP9BgCq8A+SWc="; })
    (rejectedFleet "an empty endpoint list" { etcd.endpoints = [ ]; })
    (rejectedFleet "endpoints as one comma-separated string" { etcd.endpoints = "http://10.0.0.1:2379,http://10.0.0.2:2379"; })
    (rejectedFleet "an endpoint without a scheme" (endpoint "10.0.0.1:2379"))
    (rejectedFleet "an endpoint without a port" (endpoint "http://10.0.0.1"))
    (rejectedFleet "an endpoint with port 0" (endpoint "http://10.0.0.1:0"))
    (rejectedFleet "an endpoint with port 65536" (endpoint "http://10.0.0.1:65536"))
    (rejectedFleet "an endpoint with a path" (endpoint "http://10.0.0.1:2379/v3"))
    (rejectedFleet "an endpoint with ','" (endpoint "http://10.0.0.1:2379,http://10.0.0.2:2379"))
    (rejectedFleet "an endpoint with user info" (endpoint "http://root@10.0.0.1:2379"))
    (rejectedFleet "an endpoint of another scheme" (endpoint "unix://10.0.0.1:2379"))
    (rejectedFleet "an IPv4 endpoint with an octet above 255" (endpoint "http://10.0.0.256:2379"))
    (rejectedFleet "an IPv4 endpoint with a leading zero (octal to some parsers)" (endpoint "http://10.0.0.010:2379"))
    (rejectedFleet "an IPv6 endpoint without brackets" (endpoint "http://fd00::3:2379"))
    (rejectedFleet "maxStaleness = 0" { maxStaleness = 0; })
    (rejectedFleet "maxStaleness above 3600" { maxStaleness = 3601; })
    (rejectedFleet "maxStaleness as a string" { maxStaleness = "5"; })
    (rejectedFleet "a client key given as a Nix path (it would land in the store)" {
      etcd = fleetTls.etcd // {
        tls = fleetTls.etcd.tls // {
          keyFile = ./eval.nix;
        };
      };
    })
    (rejectedFleet "a relative client key path" {
      etcd = fleetTls.etcd // {
        tls = fleetTls.etcd.tls // {
          keyFile = "keys/client.key";
        };
      };
    })
    (rejectedFleet "a relative endorsement path" { endorsementFile = "endorsement"; })
    (rejectedFleet "an allowed address that is a host name" {
      etcd.allowedAddresses = [ "etcd-1.example.org" ];
    })
    (acceptedFleet "the bounds (a 63-byte name, a 253-byte node id, maxStaleness 1 and 3600)" {
      name = lib.concatStrings (lib.replicate 63 "a");
      nodeId = lib.concatStringsSep "." (lib.replicate 126 "a") + ".b";
      maxStaleness = 3600;
    })
    (acceptedFleet "maxStaleness = 1, a one-character name, digits first" {
      name = "0";
      nodeId = "1";
      maxStaleness = 1;
    })
    (acceptedFleet "port 65535 and localhost" (endpoint "http://localhost:65535"))
    (check "fleet: sanity: the configuration the rejections start from evaluates" (fleetEvaluates withFleet) null)
  ];

  # --- the VM test nixos-tests/fleet.nix, as far as the stubs go -----------
  # Its three machines and their `fleet` specialisation, with the test
  # network's addresses given as the test framework gives them.
  fleetVmTest = import ../../nixos-tests/fleet.nix {
    testers.runNixOSTest = test: test;
    common = import ../../nixos-tests/common.nix { package = fakePackage; };
  };
  fleetTestNodes = lib.genAttrs [ "node1" "node2" "node3" ] (n: {
    networking.primaryIPAddress = "192.168.1.${lib.removePrefix "node" n}";
  });
  fleetTestNodeOptions =
    { lib, ... }:
    {
      options = {
        # services.etcd and the firewall, loosely: NixOS's own, not Strata's.
        services.etcd = lib.mkOption { type = lib.types.attrsOf lib.types.anything; };
        networking.firewall.allowedTCPPorts = lib.mkOption { type = lib.types.listOf lib.types.port; };
      };
    };
  evalFleetTestNode =
    name: extra:
    evalTestNodeWith [
      fleetTestNodeOptions
      { _module.args.nodes = fleetTestNodes; }
      fleetVmTest.nodes.${name}
    ] extra;
  fleetTestNode = name: evalFleetTestNode name [ ];
  fleetTestNodeInFleet =
    name: evalFleetTestNode name [ (fleetTestNode name).specialisation.fleet.configuration ];
  fleetRoot = builtins.fromJSON (builtins.readFile ../../nixos-tests/fleet-snakeoil-root.json);
  fleetTestAddresses = [
    "192.168.1.1"
    "192.168.1.2"
    "192.168.1.3"
  ];
  fleetVmTestScript = fleetVmTest.testScript { nodes = fleetTestNodes; };
  fleetVmTestChecks = lib.optionals (!full) [
    (check "vm test fleet: its three machines evaluate, without the fleet until they switch"
      (lib.all (
        n:
        let
          c = fleetTestNode n;
        in
        evaluates c && failedAssertions c == [ ] && fleetVars c "strata-fs" == { }
      ) [ "node1" "node2" "node3" ])
      null
    )
    (check "vm test fleet: one etcd cluster of the three machines"
      (lib.all (
        i:
        let
          etcd = (fleetTestNode "node${toString i}").services.etcd;
        in
        etcd.enable
        && etcd.name == "node${toString i}"
        && etcd.initialCluster == map (a: "node${lib.last (lib.splitString "." a)}=http://${a}:2380") fleetTestAddresses
        && etcd.advertiseClientUrls == [ "http://192.168.1.${toString i}:2379" ]
      ) [ 1 2 3 ])
      (fleetTestNode "node1").services.etcd
    )
    (check "vm test fleet: in the fleet specialisation, each node's units get the fleet, its node id, the three members"
      (lib.all (
        i:
        let
          c = fleetTestNodeInFleet "node${toString i}";
        in
        fleetEvaluates c
        && failedAssertions c == [ ]
        && fleetVars c "strata-identity" == {
          STRATA_FLEET_NAME = fleetRoot.fleet;
          STRATA_FLEET_ROOT_PUBLIC_KEY = fleetRoot.public_key;
          STRATA_FLEET_ENDORSEMENT_FILE = "%d/fleet-endorsement";
          STRATA_FLEET_ETCD_ENDPOINTS = lib.concatMapStringsSep "," (a: "http://${a}:2379") fleetTestAddresses;
          STRATA_FLEET_MAX_STALENESS_SECS = "5";
          STRATA_NODE_ID = "node-${toString i}";
        }
        && (fleetUnit c "strata-fs").IPAddressAllow == fleetTestAddresses
        && (fleetUnit c "strata-identity").LoadCredential == [ "fleet-endorsement:/var/lib/strata-fleet/endorsement" ]
      ) [ 1 2 3 ])
      (fleetVars (fleetTestNodeInFleet "node2") "strata-identity")
    )
    (check "vm test fleet: only node1 holds the (test-only) root key"
      (
        (fleetTestNode "node1").environment.etc ? "strata-fleet-test/root.json"
        && !((fleetTestNode "node2").environment.etc ? "strata-fleet-test/root.json")
        && !((fleetTestNode "node3").environment.etc ? "strata-fleet-test/root.json")
      )
      null
    )
    (check "vm test fleet: the script runs the issue's scenarios, with the test network's addresses"
      (
        lib.all (t: lib.hasInfix t fleetVmTestScript) [
          "a fleet token issued on node1 is served on node2 and node3"
          "a revocation on node3 is refused on node1 and node2 within 1 s"
          "etcd's leader stopped"
          "node3 partitioned"
          "node3.block()"
          "node3.unblock()"
          "enforces the revocation it missed"
          "not endorsed"
        ]
        && lib.hasInfix ''ETCD_ADDRESSES = ["192.168.1.1","192.168.1.2","192.168.1.3"]'' fleetVmTestScript
      )
      null
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

  # One valid grant with FIELDS replaced, under NAME.
  grantConfig = name: fields: {
    services.strata = {
      enable = true;
      token.maxTtl = 86400;
      grants.${name} = {
        actions = [
          "list"
          "read"
        ];
        pathPrefix = "/srv/data";
      }
      // fields;
    };
  };
  rejectedGrant =
    name: fields:
    check "grants: rejected: ${name}" (!(evaluates (evalConfig (grantConfig "reader" fields)).config)) null;
  rejectedGrantName =
    name: grantName:
    check "grants: rejected: ${name}" (!(evaluates (evalConfig (grantConfig grantName { })).config)) null;
  refusedByGrant =
    name: fields: needle:
    let
      msgs = failedAssertions (evalConfig (grantConfig "reader" fields)).config;
    in
    check "grants: refused: ${name}" (msgs != [ ] && lib.all (lib.hasInfix needle) msgs) msgs;

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
    ++ grantsChecks
    ++ vmTestChecks
    ++ fleetChecks
    ++ fleetVmTestChecks
    ++ disabledChecks ++ assertionChecks ++ typeChecks ++ fullChecks;
in
{
  inherit mode;
  nixpkgs = lib.trivial.version;
  passed = map (c: c.name) (lib.filter (c: c.ok) checks);
  failed = map (c: { inherit (c) name detail; }) (lib.filter (c: !c.ok) checks);
  inherit skipped;
  # The VM tests' Python scripts, for scripts/eval-module.sh to parse.
  testScripts = lib.optionalAttrs (!full) {
    fleet = fleetVmTestScript;
    grants = vmTest.testScript;
  };
}
