# NixOS module for Strata: services.strata.*
#
# The unit files come from the package (systemd/ in the repository, installed
# into $out/lib/systemd/system) through `systemd.packages`, and so do its
# tmpfiles.d rules. This module never writes a second copy of them: it only
# adds what NixOS needs on top (`wantedBy`, because NixOS ignores [Install];
# the static user that the package's sysusers.d file describes) and the
# configuration, as `environment` / `serviceConfig` entries that NixOS renders
# into an `overrides.conf` drop-in next to the packaged unit.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  cfg = config.services.strata;

  inherit (lib)
    concatStringsSep
    filter
    hasPrefix
    mkEnableOption
    mkIf
    mkOption
    mkPackageOption
    optional
    types
    ;

  # A served directory must be an absolute, normalised path: it ends up in
  # STRATA_FS_ROOTS (colon-separated) and in BindReadOnlyPaths= (where ':'
  # separates source and destination), and fs compares token prefixes
  # against it component by component.
  components = path: filter (c: c != "") (lib.splitString "/" path);
  badPaths = pred: filter pred cfg.fs.paths;
  relativePaths = badPaths (p: !hasPrefix "/" p);
  pathsWithColon = badPaths (p: lib.hasInfix ":" p);
  unnormalisedPaths = badPaths (
    p:
    hasPrefix "/" p
    && (
      lib.elem "." (components p)
      || lib.elem ".." (components p)
      || lib.hasInfix "//" p
      || (p != "/" && lib.hasSuffix "/" p)
    )
  );
  showPaths = ps: concatStringsSep ", " (map (p: ''"${p}"'') ps);

  # strata-fs.service has ProtectHome=yes, under which nothing can be bound;
  # ProtectHome=tmpfs hides the same directories but lets the served ones
  # be bound in.
  underHome = p: lib.any (h: p == h || hasPrefix "${h}/" p) [ "/home" "/root" "/run/user" ];

  # User and group names as identity resolves them at start (comma-separated
  # lists in its environment, so no commas or spaces).
  badNames = filter (n: builtins.match "[A-Za-z_][A-Za-z0-9_.-]*[$]?" n == null) (
    cfg.admins.users ++ cfg.admins.groups
  );

  logEnvironment = {
    STRATA_LOG = cfg.logLevel;
  };
in
{
  options.services.strata = {
    enable = mkEnableOption ''
      Strata, a capability-based service runtime: the identity service that
      issues capability tokens, the fs service that serves files to holders
      of a token, and the supervisor that checks both. The units are grouped
      under `strata.target`, and the services are socket-activated under
      {file}`/run/strata`'';

    package = mkPackageOption pkgs "strata" { };

    admins = {
      users = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "alice" ];
        description = ''
          Users who may issue and revoke capability tokens
          (`identity.issue`, `identity.revoke`). root always may. identity
          recognises them by the peer credentials of their connection, not by
          anything they claim. Names are resolved when identity starts.
          Passed as `STRATA_ADMIN_USERS`.
        '';
      };

      groups = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "wheel" ];
        description = ''
          Groups whose members (primary or supplementary group) may issue and
          revoke capability tokens. Names are resolved when identity starts.
          Passed as `STRATA_ADMIN_GROUPS`.
        '';
      };
    };

    fs.paths = mkOption {
      type = types.listOf types.str;
      default = [ "/srv" ];
      example = [
        "/srv/data"
        "/var/lib/reports"
      ];
      description = ''
        Directories the fs service may serve. A token whose
        `path_prefix` lies outside all of them is refused. Each must be an
        absolute, normalised path; each is bound read-only into the sandbox
        of {file}`strata-fs.service` (`BindReadOnlyPaths=`, replacing the
        unit's own list), so fs can never write to them. A directory that
        does not exist is skipped, and fs refuses every prefix under it.
        Passed as `STRATA_FS_ROOTS`.

        fs runs as a transient user (`DynamicUser=`): it reads what every
        user may read. To serve files that are not world-readable, give
        them a group and add it to
        {option}`systemd.services.strata-fs.serviceConfig.SupplementaryGroups`.
      '';
    };

    token = {
      defaultTtl = mkOption {
        type = types.ints.positive;
        default = 3600;
        example = 900;
        description = ''
          Lifetime in seconds of a token whose `identity.issue` request gives
          no `ttl_seconds`. At most {option}`services.strata.token.maxTtl`.
          Passed as `STRATA_TOKEN_DEFAULT_TTL`.
        '';
      };

      maxTtl = mkOption {
        type = types.ints.positive;
        default = 86400;
        example = 3600;
        description = ''
          Largest `ttl_seconds`, in seconds, that identity accepts. Revocations
          are kept this long. Passed as `STRATA_TOKEN_MAX_TTL`.
        '';
      };
    };

    logLevel = mkOption {
      type = types.strMatching "[^[:space:]]+";
      default = "info";
      example = "strata_fs=debug,info";
      description = ''
        Log filter of every Strata service: `error`, `warn`, `info`, `debug`,
        `trace`, or a `tracing` directive list. Logs go to the journal.
        Passed as `STRATA_LOG`.
      '';
    };

    supervisor = {
      interval = mkOption {
        type = types.ints.positive;
        default = 5;
        example = 10;
        description = ''
          Seconds between two health checks of identity and fs by the
          supervisor. Passed as `STRATA_SUPERVISOR_INTERVAL_SECS`.
        '';
      };

      failureThreshold = mkOption {
        type = types.ints.positive;
        default = 3;
        example = 5;
        description = ''
          Consecutive failed health checks after which the supervisor restarts
          a service. Passed as `STRATA_SUPERVISOR_FAILURE_THRESHOLD`.
        '';
      };
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = cfg.fs.paths != [ ];
        message = ''
          services.strata.fs.paths is empty, so strata-fs would serve nothing
          and refuse every token. List the directories it may serve, e.g.
          services.strata.fs.paths = [ "/srv/data" ];
        '';
      }
      {
        assertion = relativePaths == [ ];
        message = ''
          services.strata.fs.paths must hold absolute paths, but these are
          relative: ${showPaths relativePaths}. Write them from the root,
          e.g. "/srv/data" instead of "srv/data".
        '';
      }
      {
        assertion = pathsWithColon == [ ];
        message = ''
          services.strata.fs.paths may not contain ':' (STRATA_FS_ROOTS is
          colon-separated and so is BindReadOnlyPaths=): ${showPaths pathsWithColon}.
          Rename the directories or serve a parent directory instead.
        '';
      }
      {
        assertion = unnormalisedPaths == [ ];
        message = ''
          services.strata.fs.paths must be normalised (no "." or ".."
          components, no "//", no trailing "/"): ${showPaths unnormalisedPaths}.
          Write each path the way `realpath` would print it.
        '';
      }
      {
        assertion = lib.allUnique cfg.fs.paths;
        message = ''
          services.strata.fs.paths lists a directory more than once:
          ${showPaths cfg.fs.paths}. List each directory once.
        '';
      }
      {
        assertion = cfg.token.defaultTtl <= cfg.token.maxTtl;
        message = ''
          services.strata.token.defaultTtl (${toString cfg.token.defaultTtl} s)
          is larger than services.strata.token.maxTtl (${toString cfg.token.maxTtl} s).
          Lower defaultTtl or raise maxTtl.
        '';
      }
      {
        assertion = badNames == [ ];
        message = ''
          services.strata.admins.users and services.strata.admins.groups
          must hold user and group names (no commas, spaces or ids), but
          got: ${concatStringsSep ", " badNames}.
        '';
      }
    ];

    warnings = optional (lib.elem "/" cfg.fs.paths) ''
      services.strata.fs.paths contains "/": strata-fs may then serve any
      file on the system to whoever holds a token. Prefer listing the
      directories that are meant to be shared.
    '';

    # strata-ctl (and the service binaries) on the system PATH.
    environment.systemPackages = [ cfg.package ];

    # The units themselves: strata.target, strata-{identity,fs,supervisor}
    # .socket and .service, from $out/lib/systemd/system.
    systemd.packages = [ cfg.package ];

    # /run/strata, group-writable for strata-identity and sticky, from
    # $out/lib/tmpfiles.d.
    systemd.tmpfiles.packages = [ cfg.package ];

    # The static user of $out/lib/sysusers.d/strata.conf (NixOS manages its
    # users itself). strata-identity.service has DynamicUser=yes with
    # User=strata-identity: systemd uses this user since it exists, and
    # identity may then publish /run/strata/identity.pub.
    users.users.strata-identity = {
      isSystemUser = true;
      group = "strata-identity";
      description = "Strata identity service";
    };
    users.groups.strata-identity = { };

    # strata-fs runs as a static user too: DynamicUser= would imply
    # RestrictSUIDSGID=yes, whose seccomp filter makes openat2 fail with
    # ENOSYS, and fs resolves every path with openat2.
    users.users.strata-fs = {
      isSystemUser = true;
      group = "strata-fs";
      description = "Strata fs service";
    };
    users.groups.strata-fs = { };

    # NixOS does not read [Install] sections: say here what `systemctl
    # enable strata.target` would have linked. The services themselves are
    # left out on purpose: identity and fs start on their first connection,
    # and strata.target pulls in the supervisor (Wants=).
    systemd.targets.strata.wantedBy = [ "multi-user.target" ];

    systemd.sockets = lib.genAttrs [ "strata-identity" "strata-fs" "strata-supervisor" ] (_: {
      wantedBy = [ "strata.target" ];
    });

    systemd.services.strata-identity.environment = logEnvironment // {
      STRATA_ADMIN_USERS = concatStringsSep "," cfg.admins.users;
      STRATA_ADMIN_GROUPS = concatStringsSep "," cfg.admins.groups;
      STRATA_TOKEN_DEFAULT_TTL = toString cfg.token.defaultTtl;
      STRATA_TOKEN_MAX_TTL = toString cfg.token.maxTtl;
    };

    systemd.services.strata-fs = {
      environment = logEnvironment // {
        STRATA_FS_ROOTS = concatStringsSep ":" cfg.fs.paths;
      };
      serviceConfig = {
        # An empty assignment first (mkBefore: ahead of any other
        # definition) resets the unit's own list (`-/srv`), then the served
        # paths; "-": a missing directory is skipped rather than failing the
        # service. Further definitions, e.g. an operator's, are appended.
        BindReadOnlyPaths = lib.mkBefore ([ "" ] ++ map (p: "-${p}") cfg.fs.paths);
        ProtectHome = mkIf (lib.any underHome cfg.fs.paths) "tmpfs";
      };
    };

    systemd.services.strata-supervisor.environment = logEnvironment // {
      STRATA_SUPERVISOR_INTERVAL_SECS = toString cfg.supervisor.interval;
      STRATA_SUPERVISOR_FAILURE_THRESHOLD = toString cfg.supervisor.failureThreshold;
    };
  };
}
