# NixOS module for Strata: services.strata.*
#
# The unit files come from the package (systemd/ in the repository, installed
# into $out/lib/systemd/system) through `systemd.packages`, and so do its
# tmpfiles.d rules. This module never writes a second copy of them: it only
# adds what NixOS needs on top (`wantedBy`, because NixOS ignores [Install];
# the static users that the package's sysusers.d file describes) and the
# configuration, rendered from `settings` into `environment` entries that
# NixOS writes to an `overrides.conf` drop-in next to each packaged unit.
#
# `settings` (RFC 42) is the one place for every variable a service reads
# (docs/configuration.md): its keys are the variables' names. The dedicated
# options (admins, fs.paths, token, supervisor, logLevel) are the common
# knobs: each is the default of its `settings` key, which wins when set.
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
    literalExpression
    mkEnableOption
    mkIf
    mkOption
    types
    ;

  # The services' own bounds (services/*/src/config.rs), so that a value a
  # service would refuse at start is refused at evaluation instead.
  ttlCeiling = 30 * 24 * 3600; # identity's TTL_CEILING

  # A name identity resolves at start; its lists are comma-separated.
  accountName = types.strMatching "[A-Za-z_][A-Za-z0-9_.-]*[$]?";

  logFilter = types.strMatching "[^[:space:]]+";

  # A typed key of `settings` whose default is a dedicated option.
  keyFrom =
    type: option: description:
    mkOption {
      inherit type description;
      default = lib.attrByPath option null cfg;
      defaultText = literalExpression "config.services.strata.${concatStringsSep "." option}";
    };

  ttl = types.ints.between 1 ttlCeiling;
  # 2^32 - 1 is (uid_t) -1, "no uid", never a caller.
  accountId = types.ints.between 0 4294967294;

  # One typed key of `settings`: null (the default) leaves the variable
  # unset, so the service uses its own default.
  optionalKey =
    type: description:
    mkOption {
      type = types.nullOr type;
      default = null;
      inherit description;
    };

  # The audit trail of identity and fs (shared/src/audit/trail.rs,
  # docs/audit.md); the units put it in LogsDirectory=.
  auditKeys = {
    STRATA_AUDIT_MAX_BYTES = optionalKey (types.ints.between 65536 1099511627776) ''
      Size in bytes at which the audit trail file is rotated (service
      default 67108864, 64 MiB).
    '';
    STRATA_AUDIT_KEEP = optionalKey (types.ints.between 0 1000000) ''
      Rotated audit trail files kept; the oldest beyond it are deleted, and
      verification then starts from the oldest kept (service default 8;
      0 keeps all).
    '';
  };

  # What every service reads (shared/src/config.rs, server.rs).
  commonKeys = service: {
    STRATA_LOG = mkOption {
      type = logFilter;
      default = cfg.logLevel;
      defaultText = literalExpression "config.services.strata.logLevel";
      description = "Log filter of ${service}.";
    };
    STRATA_MAX_CONNECTIONS = optionalKey (types.ints.between 1 1048576) ''
      Concurrent connections ${service} accepts (service default 1024).
    '';
    STRATA_MAX_CONNECTIONS_PER_UID = optionalKey (types.ints.between 1 1048576) ''
      Connections one ordinary uid may hold on ${service} (service default 64).
    '';
    STRATA_RESERVED_CONNECTIONS = optionalKey (types.ints.between 1 65536) ''
      Connections beyond STRATA_MAX_CONNECTIONS that only root, identity's
      administrators and STRATA_RESERVED_USERS may use (service default 32).
    '';
    STRATA_FRAME_MEMORY_PER_UID_MIB = optionalKey (types.ints.between 2 1048576) ''
      MiB of frame buffers one ordinary uid may hold on ${service} (service
      default 16).
    '';
    STRATA_FRAME_MEMORY_TOTAL_MIB = optionalKey (types.ints.between 2 1048576) ''
      MiB of frame buffers all ordinary callers of ${service} may hold
      together (service default 128).
    '';
    STRATA_FRAME_TIMEOUT_MS = optionalKey (types.ints.between 10 600000) ''
      Milliseconds within which a frame must arrive whole once its first
      byte has, and a response must be read (service default 10000).
    '';
    STRATA_IDLE_TIMEOUT_SECS = optionalKey (types.ints.between 1 86400) ''
      Seconds a connection may stay silent between frames (service default
      300).
    '';
  };

  # Freeform entries are passed as they are: strings, integers, booleans
  # (as 1 or 0). Typed lists are joined with the separator the service
  # splits them on.
  freeformValue = types.attrsOf (
    types.oneOf [
      types.str
      types.int
      types.bool
    ]
  );

  section =
    service: keys:
    mkOption {
      default = { };
      description = ''
        Environment of {file}`strata-${service}.service`: each key is a
        variable of docs/configuration.md. Keys not declared here are passed
        through unchanged (strings, integers, or booleans as `1`/`0`).
      '';
      type = types.submodule {
        freeformType = freeformValue;
        options = commonKeys service // keys;
      };
    };

  listSeparator = {
    STRATA_FS_ROOTS = ":";
  };
  render =
    name: value:
    if builtins.isList value then
      concatStringsSep (listSeparator.${name} or ",") (map toString value)
    else if builtins.isBool value then
      (if value then "1" else "0")
    else
      toString value;
  environmentOf =
    section: lib.mapAttrs render (lib.filterAttrs (_: v: v != null && v != [ ]) section);

  roots = cfg.settings.fs.STRATA_FS_ROOTS;
  identity = cfg.settings.identity;

  # A served directory must be an absolute, normalised path: it ends up in
  # STRATA_FS_ROOTS (colon-separated) and in BindReadOnlyPaths= (where ':'
  # separates source and destination), and fs compares token prefixes
  # against it component by component.
  components = path: filter (c: c != "") (lib.splitString "/" path);
  badPaths = pred: filter pred roots;
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

  # --- Fleet (docs/fleet.md, the fleet contract's variables) ---------------
  fleet = cfg.fleet;

  # shared/src/fleet.rs is_fleet_name (FLEET_NAME_RULE): one lowercase DNS
  # label, [a-z0-9-], 1 to 63 bytes, no '-' at either end.
  dnsLabel = "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?";
  fleetName = types.strMatching dnsLabel // {
    description = "fleet name (one lowercase DNS label: [a-z0-9-], 1 to 63 bytes, no '-' at either end)";
  };
  # shared/src/config.rs is_node_id (STRATA_NODE_ID): such labels joined by
  # '.', at most 253 bytes.
  nodeIdType = types.addCheck (types.strMatching "${dnsLabel}([.]${dnsLabel})*") (
    s: lib.stringLength s <= 253
  ) // {
    description = "node id (lowercase DNS labels joined by '.', at most 253 bytes)";
  };
  # A public key as `strata-ctl fleet init` prints it: standard base64,
  # padded, of 32 bytes (44 characters, the last data character carrying
  # 2 bits of payload and 4 zero bits).
  publicKeyType = types.strMatching "[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=" // {
    description = "Ed25519 public key (standard base64 of 32 bytes, as `strata-ctl fleet init` prints it)";
  };

  # An etcd endpoint: http(s)://HOST:PORT and nothing more (no path, no
  # user, no ','; the list is joined with ','). HOST is a DNS name, an IPv4
  # address or a bracketed IPv6 address.
  hostLabel = "[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?";
  endpointParts =
    s:
    let
      m = builtins.match "(https?)://(${hostLabel}([.]${hostLabel})*|[[][0-9A-Fa-f:.]+[]]):([1-9][0-9]{0,4})" s;
    in
    if m == null then
      null
    else
      {
        scheme = lib.head m;
        host = lib.elemAt m 1;
        port = lib.toInt (lib.last m);
      };
  ipv4Octets = host: builtins.match "([0-9]{1,3})[.]([0-9]{1,3})[.]([0-9]{1,3})[.]([0-9]{1,3})" host;
  # A host that looks like an IPv4 address must be one.
  validHost =
    host:
    let
      octets = ipv4Octets host;
    in
    # (Leading zeros first: lib.toInt throws on them.)
    octets == null || lib.all (o: (o == "0" || !lib.hasPrefix "0" o) && lib.toInt o <= 255) octets;
  endpointType =
    types.addCheck types.str (
      s:
      let
        p = endpointParts s;
      in
      p != null && p.port <= 65535 && validHost p.host
    )
    // {
      description = "etcd endpoint (http://HOST:PORT or https://HOST:PORT)";
    };
  endpoints = if fleet.etcd.endpoints == null then [ ] else fleet.etcd.endpoints;
  endpointHosts = map (e: (endpointParts e).host) endpoints;
  schemes = lib.unique (map (e: (endpointParts e).scheme) endpoints);
  # The address IPAddressAllow= takes for a host, or null for a DNS name
  # (which a kernel filter cannot follow).
  literalAddress =
    host:
    if ipv4Octets host != null then
      host
    else if hasPrefix "[" host then
      lib.removeSuffix "]" (lib.removePrefix "[" host)
    else if host == "localhost" then
      "localhost"
    else
      null;
  namedHosts = filter (h: literalAddress h == null) endpointHosts;
  allowedAddresses =
    if fleet.etcd.allowedAddresses != null then
      fleet.etcd.allowedAddresses
    else
      lib.unique (filter (a: a != null) (map literalAddress endpointHosts));

  # An absolute path given as a string: a private key given as a Nix path
  # literal would be copied into the world-readable Nix store.
  externalFile = types.strMatching "/[^[:space:]]*" // {
    description = "absolute path (a string, not a Nix path: the file stays out of the Nix store)";
  };
  # A public file: a Nix path (copied into the store) or an absolute path.
  publicFile = types.addCheck types.path (p: builtins.match ".*[[:space:]].*" (toString p) == null);

  tls = fleet.etcd.tls;
  # Each file is handed to the service with LoadCredential= (systemd copies
  # it into the service's private credentials directory, %d, readable by
  # the service's user only), so the files may stay root:root 0600.
  # name -> { variable; file; } for the files set; identity alone gets the
  # endorsement (fs ignores it).
  fleetFiles =
    service:
    lib.filterAttrs (_: f: f.file != null) (
      {
        fleet-etcd-ca = {
          variable = "STRATA_FLEET_ETCD_CA_FILE";
          file = tls.caFile;
        };
        fleet-etcd-cert = {
          variable = "STRATA_FLEET_ETCD_CERT_FILE";
          file = tls.certFile;
        };
        fleet-etcd-key = {
          variable = "STRATA_FLEET_ETCD_KEY_FILE";
          file = tls.keyFile;
        };
      }
      // lib.optionalAttrs (service == "identity") {
        fleet-endorsement = {
          variable = "STRATA_FLEET_ENDORSEMENT_FILE";
          file = fleet.endorsementFile;
        };
      }
    );
  # The contract's variables (docs/configuration.md, "Fleet"); empty when
  # the fleet is off. The same values for identity and fs, so that they
  # cannot disagree on the fleet or the node id.
  fleetEnvironment =
    service:
    lib.optionalAttrs fleet.enable (
      lib.filterAttrs (_: v: v != null) {
        STRATA_FLEET_NAME = fleet.name;
        STRATA_FLEET_ROOT_PUBLIC_KEY = fleet.rootPublicKey;
        STRATA_FLEET_ETCD_ENDPOINTS = concatStringsSep "," endpoints;
        STRATA_FLEET_MAX_STALENESS_SECS = toString fleet.maxStaleness;
        STRATA_NODE_ID = fleet.nodeId;
      }
      // lib.mapAttrs' (name: f: lib.nameValuePair f.variable "%d/${name}") (fleetFiles service)
    );
  fleetCredentials = service: lib.mapAttrsToList (name: f: "${name}:${f.file}") (fleetFiles service);
  # What the services' units forbid and a fleet needs: the host's network,
  # and TCP to etcd's members only (systemd/strata-fleet.conf, the Debian
  # drop-in, says the same; scripts/eval-module.sh compares them).
  fleetServiceConfig = service: {
    PrivateNetwork = false;
    RestrictAddressFamilies = [
      ""
      "AF_UNIX AF_INET AF_INET6"
    ];
    # The unit's IPAddressDeny=any stays; these addresses are let through.
    IPAddressAllow = allowedAddresses;
  }
  // lib.optionalAttrs (fleetCredentials service != [ ]) {
    LoadCredential = fleetCredentials service;
  };
  # settings keys that services.strata.fleet sets: defined in both places,
  # one would silently win.
  fleetKeysInSettings = lib.concatMap (
    service:
    map (k: "settings.${service}.${k}") (
      lib.attrNames (
        lib.filterAttrs (
          k: v: v != null && (hasPrefix "STRATA_FLEET_" k || k == "STRATA_NODE_ID")
        ) cfg.settings.${service}
      )
    )
  ) [ "identity" "fs" ];
  missingFleetOptions = map (n: "services.strata.fleet.${n}") (
    filter (n: lib.attrByPath (lib.splitString "." n) null fleet == null) [
      "name"
      "nodeId"
      "rootPublicKey"
      "endorsementFile"
      "etcd.endpoints"
    ]
  );

in
{
  # services.strata.grants, in a file of its own.
  imports = [ ./grants.nix ];

  options.services.strata = {
    enable = mkEnableOption "Strata, a capability-based service runtime";

    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ../package.nix { };
      defaultText = literalExpression "pkgs.callPackage \"\${strata}/package.nix\" { }";
      description = ''
        The Strata package: {command}`strata-ctl` (output `bin`, the only
        one put on {env}`PATH`), the daemons and unit files (output `out`).
        Built from the configuration's own `pkgs` by default, so a flake
        input without `inputs.nixpkgs.follows` does not bring a second
        nixpkgs.
      '';
    };

    admins = {
      users = mkOption {
        type = types.listOf accountName;
        default = [ ];
        example = [ "alice" ];
        description = ''
          Users who may issue and revoke capability tokens; root always
          may. identity recognises them by the peer credentials of their
          connection, not by anything they claim, and resolves the names
          when it starts. The default of
          {option}`services.strata.settings.identity.STRATA_ADMIN_USERS`.
        '';
      };
      groups = mkOption {
        type = types.listOf accountName;
        default = [ ];
        example = [ "wheel" ];
        description = ''
          Groups whose members (primary or supplementary group) may issue
          and revoke capability tokens. The default of
          {option}`services.strata.settings.identity.STRATA_ADMIN_GROUPS`.
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
        Directories the fs service may serve; a token whose `path_prefix`
        lies outside all of them is refused. Each must be an absolute,
        normalised path, and each is bound read-only into the sandbox of
        {file}`strata-fs.service` (`BindReadOnlyPaths=`, replacing the
        unit's own list), so fs can never write to them. A directory that
        does not exist is skipped.

        fs runs as the static system user `strata-fs` and reads what that
        user may read. To serve files that are not world-readable, give
        them a group and add it to
        {option}`systemd.services.strata-fs.serviceConfig.SupplementaryGroups`.
        The default of {option}`services.strata.settings.fs.STRATA_FS_ROOTS`.
      '';
    };

    token = {
      defaultTtl = mkOption {
        type = ttl;
        default = 3600;
        example = 900;
        description = ''
          Lifetime in seconds of a token whose `identity.issue` gives no
          `ttl_seconds`: 1 to 30 days, and at most
          {option}`services.strata.token.maxTtl`. The default of
          {option}`services.strata.settings.identity.STRATA_TOKEN_DEFAULT_TTL`.
        '';
      };
      maxTtl = mkOption {
        type = ttl;
        default = 86400;
        example = 3600;
        description = ''
          Largest `ttl_seconds` identity accepts, in seconds: 1 to 30 days
          (identity's ceiling). Revocations are kept this long. The default
          of {option}`services.strata.settings.identity.STRATA_TOKEN_MAX_TTL`.
        '';
      };
    };

    supervisor = {
      interval = mkOption {
        type = types.ints.between 1 3600;
        default = 5;
        example = 10;
        description = ''
          Seconds between two health checks of identity and fs. The default
          of {option}`services.strata.settings.supervisor.STRATA_SUPERVISOR_INTERVAL_SECS`.
        '';
      };
      failureThreshold = mkOption {
        type = types.ints.between 1 1000;
        default = 3;
        example = 5;
        description = ''
          Consecutive failed health checks after which the supervisor
          restarts a service. The default of
          {option}`services.strata.settings.supervisor.STRATA_SUPERVISOR_FAILURE_THRESHOLD`.
        '';
      };
    };

    logLevel = mkOption {
      type = logFilter;
      default = "info";
      example = "strata_fs=debug,info";
      description = ''
        Log filter of every Strata service: `error`, `warn`, `info`, `debug`,
        `trace`, or a `tracing` directive list. The default of each
        `settings.<service>.STRATA_LOG`.
      '';
    };

    settings = mkOption {
      default = { };
      example = literalExpression ''
        {
          identity.STRATA_ADMIN_GROUPS = [ "wheel" ];
          fs.STRATA_FS_ROOTS = [ "/srv/data" ];
          fs.STRATA_FS_HANDLE_IDLE_SECS = 60;
          supervisor.STRATA_SUPERVISOR_INTERVAL_SECS = 10;
        }
      '';
      description = ''
        The environment of each Strata service, one attribute set per
        service; the keys are the variables of
        [docs/configuration.md](https://example.invalid/strata/docs/configuration.md).
        Known keys are typed with the bounds the services enforce, so a
        value a service would refuse at start fails the evaluation; other
        keys are passed through. Rendered into each unit's `environment`.
      '';
      type = types.submodule {
        options = {
          identity = section "identity" (auditKeys // {
            STRATA_ADMIN_USERS = keyFrom (types.listOf accountName) [
              "admins"
              "users"
            ] "User names that may issue and revoke tokens.";
            STRATA_ADMIN_GROUPS = keyFrom (types.listOf accountName) [
              "admins"
              "groups"
            ] "Group names whose members may issue and revoke tokens.";
            STRATA_RESERVED_USERS = optionalKey (types.listOf accountName) ''
              Users besides administrators that may use identity's reserved
              connections. The unit's default is strata-fs, so that fs's
              revocation sync gets through whatever other users hold.
            '';
            STRATA_ADMIN_UIDS = mkOption {
              type = types.listOf accountId;
              default = [ ];
              description = "Numeric uids that may issue and revoke tokens.";
            };
            STRATA_ADMIN_GIDS = mkOption {
              type = types.listOf accountId;
              default = [ ];
              description = "Numeric gids whose members may issue and revoke tokens.";
            };
            STRATA_TOKEN_DEFAULT_TTL = keyFrom ttl [
              "token"
              "defaultTtl"
            ] "Seconds a token lives when `identity.issue` gives no `ttl_seconds`.";
            STRATA_TOKEN_MAX_TTL = keyFrom ttl [
              "token"
              "maxTtl"
            ] "Largest `ttl_seconds` identity accepts.";
          });

          fs = section "fs" (auditKeys // {
            STRATA_FS_ROOTS = keyFrom (types.listOf types.str) [
              "fs"
              "paths"
            ] "Directories fs may serve (see {option}`services.strata.fs.paths`).";
            STRATA_FS_MAX_HANDLES = optionalKey (types.ints.between 1 1048576) ''
              Open handles in total (service default 16384).
            '';
            STRATA_FS_MAX_HANDLES_PER_CAP = optionalKey (types.ints.between 1 1048576) ''
              Open handles per capability (service default 1024).
            '';
            STRATA_FS_HANDLE_IDLE_SECS = optionalKey (types.ints.between 1 604800) ''
              Seconds after which an unused handle is closed (service default
              300).
            '';
            STRATA_FS_ALLOW_HARDLINKS = optionalKey types.bool ''
              Whether fs opens regular files that have more than one link
              (service default false).
            '';
            STRATA_FS_LIST_CACHE = optionalKey types.bool ''
              Whether `fs.list` answers are cached, each for at most
              100 ms (service default true).
            '';
            STRATA_FS_MAX_RATE_BUCKETS = optionalKey (types.ints.between 1 4194304) ''
              Rate-limited capabilities whose token buckets fs tracks at
              once (service default 65536, about 100 bytes each).
            '';
          });

          supervisor = section "supervisor" {
            STRATA_SUPERVISOR_INTERVAL_SECS = keyFrom (types.ints.between 1 3600) [
              "supervisor"
              "interval"
            ] "Seconds between two health checks.";
            STRATA_SUPERVISOR_FAILURE_THRESHOLD = keyFrom (types.ints.between 1 1000) [
              "supervisor"
              "failureThreshold"
            ] "Failed health checks in a row before a restart.";
          };
        };
      };
    };

    fleet = {
      enable = mkOption {
        type = types.bool;
        default = false;
        example = true;
        description = ''
          Whether this node is a member of a fleet (docs/fleet.md): one
          root key and one revocation log in etcd, shared by several nodes.
          identity publishes its key and endorsement to etcd and commits
          revocations there; fs accepts the fleet's tokens (`aud` naming
          `fleet:<name>`) from every endorsed node, follows the
          revocations, and refuses fleet tokens (code 6) once it has not
          heard from etcd for `maxStaleness`. identity and fs then get the
          host's network, may reach the etcd members only, and are started
          with strata.target rather than on their first call: identity
          publishes its key and retries pending revocations, fs keeps
          following etcd.
        '';
      };

      name = mkOption {
        type = types.nullOr fleetName;
        default = null;
        example = "prod";
        description = ''
          The fleet's name, as given to `strata-ctl fleet init --fleet`
          (STRATA_FLEET_NAME). Tokens for the fleet are issued with
          `--aud fleet:<name>`.
        '';
      };

      nodeId = mkOption {
        type = types.nullOr nodeIdType;
        default = null;
        example = "node-1";
        description = ''
          This node's id (STRATA_NODE_ID, set for identity and fs alike):
          the one its endorsement names (`strata-ctl fleet endorse
          --node-id`). Unique in the fleet.
        '';
      };

      rootPublicKey = mkOption {
        type = types.nullOr publicKeyType;
        default = null;
        example = "6yuNSpOB+WfYkR8l0fLyJCtc+oWHtbUP9BgCq8A+SWc=";
        description = ''
          The fleet root's public key, as `strata-ctl fleet init` prints it
          in `public_key` (STRATA_FLEET_ROOT_PUBLIC_KEY). Only keys endorsed
          by this root are trusted; it is configured here, never read from
          etcd.
        '';
      };

      endorsementFile = mkOption {
        type = types.nullOr publicFile;
        default = null;
        example = "/var/lib/strata-fleet/endorsement";
        description = ''
          This node's endorsement, the output of `strata-ctl fleet endorse`
          for this node's identity key. It holds no secret: a Nix path is
          fine (it is copied into the store); a string names a file managed
          outside Nix. Handed to identity with `LoadCredential=`, so the
          file may be root-only (0600); identity reads it from its
          credentials directory (STRATA_FLEET_ENDORSEMENT_FILE =
          `%d/fleet-endorsement`).
        '';
      };

      maxStaleness = mkOption {
        type = types.ints.between 1 3600;
        default = 5;
        example = 10;
        description = ''
          Seconds fs may go without hearing from etcd before it refuses
          fleet tokens (code 6, UNAVAILABLE) until it has caught up again
          (STRATA_FLEET_MAX_STALENESS_SECS). Node-local tokens are served
          regardless. A revoked fleet token may be accepted up to this long
          on a node cut off from etcd.
        '';
      };

      etcd = {
        endpoints = mkOption {
          type = types.nullOr (types.nonEmptyListOf endpointType);
          default = null;
          example = [
            "https://10.0.0.11:2379"
            "https://10.0.0.12:2379"
            "https://10.0.0.13:2379"
          ];
          description = ''
            etcd's client URLs, `http://HOST:PORT` or `https://HOST:PORT`,
            all of one scheme (STRATA_FLEET_ETCD_ENDPOINTS, joined with
            `,`). List every member, so that one member down changes
            nothing. Addresses given as IPs (or `localhost`) are what
            identity and fs may connect to (`IPAddressAllow=`); for host
            names, set {option}`services.strata.fleet.etcd.allowedAddresses`.
          '';
        };

        allowedAddresses = mkOption {
          type = types.nullOr (
            types.listOf (
              types.strMatching "[0-9A-Fa-f:.]+(/[0-9]{1,3})?|any|localhost|link-local|multicast"
            )
          );
          default = null;
          example = [
            "10.0.0.0/24"
            "localhost"
          ];
          description = ''
            Addresses (or prefixes) identity and fs may reach
            (`IPAddressAllow=`; the units' `IPAddressDeny=any` stays).
            `null`: the endpoints' own addresses, which needs every endpoint
            to be an IP address or `localhost`. With host names, list the
            addresses they resolve to, and the resolver's if it is not
            reached through nscd (e.g. `localhost` for systemd-resolved);
            `[ "any" ]` lifts the filter.
          '';
        };

        tls = {
          caFile = mkOption {
            type = types.nullOr publicFile;
            default = null;
            example = "/etc/etcd/ca.pem";
            description = ''
              PEM certificate(s) of the authority that signed etcd's server
              certificates (STRATA_FLEET_ETCD_CA_FILE); needed with
              `https://` endpoints. Passed with `LoadCredential=`.
            '';
          };
          certFile = mkOption {
            type = types.nullOr publicFile;
            default = null;
            example = "/etc/strata/fleet/etcd-client.pem";
            description = ''
              PEM client certificate for etcd's client certificate
              authentication (STRATA_FLEET_ETCD_CERT_FILE), with
              {option}`services.strata.fleet.etcd.tls.keyFile`. Passed with
              `LoadCredential=`.
            '';
          };
          keyFile = mkOption {
            type = types.nullOr externalFile;
            default = null;
            example = "/run/keys/strata-etcd-client.key";
            description = ''
              The client certificate's private key, PEM
              (STRATA_FLEET_ETCD_KEY_FILE). A string, not a Nix path, so
              that it never enters the Nix store; it may be root-only
              (0600): systemd hands each service a private copy
              (`LoadCredential=`).
            '';
          };
        };
      };
    };
  };

  config = mkIf cfg.enable (lib.mkMerge [ {
    assertions = [
      {
        assertion = roots != [ ];
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
        assertion = lib.allUnique roots;
        message = ''
          services.strata.fs.paths lists a directory more than once:
          ${showPaths roots}. List each directory once.
        '';
      }
      {
        assertion = identity.STRATA_TOKEN_DEFAULT_TTL <= identity.STRATA_TOKEN_MAX_TTL;
        message = ''
          services.strata.token.defaultTtl (${toString identity.STRATA_TOKEN_DEFAULT_TTL} s)
          is larger than services.strata.token.maxTtl (${toString identity.STRATA_TOKEN_MAX_TTL} s).
          Lower defaultTtl or raise maxTtl (or their settings.identity keys).
        '';
      }
    ];

    warnings = lib.optional (lib.elem "/" roots) ''
      services.strata.fs.paths contains "/": strata-fs may then serve any
      file on the system to whoever holds a token. Prefer listing the
      directories that are meant to be shared.
    '';

    # Only strata-ctl, the package's `bin` output, belongs on PATH: the
    # daemons are started by their units, the benchmark tools are in `tools`.
    environment.systemPackages = [ (lib.getBin cfg.package) ];

    # The units themselves: strata.target, strata-{identity,fs,supervisor}
    # .socket and .service, strata-identity-credentials.socket and
    # strata-registry.socket, from $out/lib/systemd/system.
    systemd.packages = [ cfg.package.out ];

    # /run/strata, group-writable for strata-identity and sticky, from
    # $out/lib/tmpfiles.d.
    systemd.tmpfiles.packages = [ cfg.package.out ];

    # The static users of $out/lib/sysusers.d/strata.conf (NixOS manages its
    # users itself). strata-identity.service has DynamicUser=yes with
    # User=strata-identity: systemd uses this user since it exists, and
    # identity may then publish /run/strata/identity.pub.
    users.users.strata-identity = {
      isSystemUser = true;
      group = "strata-identity";
      description = "Strata identity service";
    };
    users.groups.strata-identity = { };

    # strata-fs runs as a static user: DynamicUser= would imply
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

    systemd.sockets = lib.genAttrs [ "strata-identity" "strata-identity-credentials" "strata-fs" "strata-supervisor" "strata-registry" ] (_: {
      wantedBy = [ "strata.target" ];
    });

    # (The fleet's variables win over settings; an assertion refuses
    # settings that set them.)
    systemd.services.strata-identity.environment =
      environmentOf cfg.settings.identity // fleetEnvironment "identity";

    systemd.services.strata-fs = {
      environment = environmentOf cfg.settings.fs // fleetEnvironment "fs";
      serviceConfig = {
        # An empty assignment first (mkBefore: ahead of any other
        # definition) resets the unit's own list (`-/srv`), then the served
        # paths; "-": a missing directory is skipped rather than failing the
        # service. Further definitions, e.g. an operator's, are appended.
        BindReadOnlyPaths = lib.mkBefore ([ "" ] ++ map (p: "-${p}") roots);
        ProtectHome = mkIf (lib.any underHome roots) "tmpfs";
      };
    };

    systemd.services.strata-supervisor.environment = environmentOf cfg.settings.supervisor;
  }

  (mkIf fleet.enable {
    assertions = [
      {
        assertion = missingFleetOptions == [ ];
        message = ''
          services.strata.fleet.enable is set, but ${concatStringsSep ", " missingFleetOptions}
          ${if lib.length missingFleetOptions == 1 then "is" else "are"} not. A fleet member needs the fleet's name, this node's id,
          the root public key (`public_key` of `strata-ctl fleet init`), this
          node's endorsement (`strata-ctl fleet endorse`) and etcd's endpoints;
          see docs/fleet.md.
        '';
      }
      {
        assertion = (tls.certFile == null) == (tls.keyFile == null);
        message = ''
          services.strata.fleet.etcd.tls.certFile and keyFile go together (a
          client certificate and its private key): set both or neither.
        '';
      }
      {
        assertion = lib.length schemes <= 1;
        message = ''
          services.strata.fleet.etcd.endpoints mixes http:// and https://:
          ${concatStringsSep ", " endpoints}. Use one scheme for every member.
        '';
      }
      {
        assertion = schemes != [ "http" ] || lib.all (f: f == null) [ tls.caFile tls.certFile tls.keyFile ];
        message = ''
          services.strata.fleet.etcd.tls files are set, but the endpoints are
          http://, so they would not be used and the traffic to etcd would be
          plain text. Write the endpoints as https://HOST:PORT.
        '';
      }
      {
        assertion = schemes != [ "https" ] || tls.caFile != null;
        message = ''
          services.strata.fleet.etcd.endpoints are https://, but
          services.strata.fleet.etcd.tls.caFile is not set: give the PEM
          certificate of the authority that signed etcd's server certificates
          (etcd's --trusted-ca-file side), so that identity and fs can tell
          etcd from an impostor.
        '';
      }
      {
        assertion = fleet.etcd.allowedAddresses != null || namedHosts == [ ];
        message = ''
          services.strata.fleet.etcd.endpoints name hosts by name
          (${concatStringsSep ", " (lib.unique namedHosts)}), and identity and fs may reach only
          the addresses they are allowed (IPAddressDeny=any, IPAddressAllow=),
          which a name cannot be. Give the endpoints as IP addresses, or list
          the addresses they resolve to (and the resolver's, e.g. "localhost")
          in services.strata.fleet.etcd.allowedAddresses ([ "any" ] lifts the
          filter).
        '';
      }
      {
        assertion = fleetKeysInSettings == [ ];
        message = ''
          services.strata.fleet sets the fleet's variables and STRATA_NODE_ID
          for identity and fs, but services.strata.${concatStringsSep ", services.strata." fleetKeysInSettings}
          set them too. Remove them from settings and use the
          services.strata.fleet options.
        '';
      }
    ];

    systemd.services.strata-identity = {
      serviceConfig = fleetServiceConfig "identity";
      wantedBy = [ "strata.target" ];
    };
    systemd.services.strata-fs = {
      serviceConfig = fleetServiceConfig "fs";
      wantedBy = [ "strata.target" ];
    };
  })
  ]);

  # No meta.doc: the NixOS manual takes every module's meta.doc as a
  # chapter, and an out-of-tree chapter fails its anchor and redirect checks,
  # which would stop nixos-rebuild on hosts that build the manual (the
  # default). docs/nixos.md is the module's documentation.
  meta.maintainers = [
    {
      name = "Strata developers";
      email = "strata@example.invalid";
    }
  ];
}
