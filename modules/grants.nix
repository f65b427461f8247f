# services.strata.grants: declarative grants (docs/grants.md), imported by
# ./strata.nix.
#
# Each grant is rendered to /etc/strata/grants.d/<name>.json for identity,
# and adds to its consuming unit the credential, the ordering on the
# credential socket and the revocation of its tokens at stop: list values
# only, appended to the unit's own definition, which is otherwise left as
# it is. The option types are identity's own rules
# (services/identity/src/grants.rs), so that a grant identity would refuse
# fails the evaluation instead.
{
  config,
  lib,
  ...
}:

let
  cfg = config.services.strata;

  inherit (lib)
    concatStringsSep
    filter
    hasPrefix
    literalExpression
    mkIf
    mkOption
    types
    ;

  # grants.rs is_grant_name: the file name and the credential id
  # strata-<name> are built from it, so no '.' and no '/'.
  grantName = types.strMatching "[a-z0-9][a-z0-9_-]{0,63}";

  # grants.rs is_service_unit: a service unit of at most 255 characters
  # that does not start with '.'.
  serviceUnit = types.strMatching "[A-Za-z0-9:_\\@-][A-Za-z0-9:_.\\@-]{0,246}[.]service";

  # shared/src/capability.rs is_fs_action: FS_ACTIONS and DELEGATE
  # (api/protocol.md, "fs" and "identity.delegate").
  fsActions = [
    "open"
    "read"
    "list"
    "stat"
    "close"
    "delegate"
  ];

  # identity's TTL_CEILING (30 days); the bound of services.strata.token.*.
  ttlCeiling = 30 * 24 * 3600;

  # shared/src/paths.rs check_prefix: "/" or an absolute path without ".",
  # ".." or empty components and without a trailing "/"; at most 4096
  # bytes, each component at most 255.
  isPathPrefix =
    p:
    p == "/"
    || (
      hasPrefix "/" p
      && lib.stringLength p <= 4096
      && lib.all (c: c != "" && c != "." && c != ".." && lib.stringLength c <= 255) (
        lib.tail (lib.splitString "/" p)
      )
    );
  pathPrefix = types.addCheck types.str isPathPrefix // {
    name = "strataPathPrefix";
    description = "absolute, normalized path (no `.`, `..`, `//` or trailing `/`)";
  };

  grantOptions =
    { name, ... }:
    {
      options = {
        name = mkOption {
          type = grantName;
          default = name;
          readOnly = true;
          description = ''
            The grant's name, its attribute name: `[a-z0-9][a-z0-9_-]*`, at
            most 64 characters, as identity accepts it. The file is
            {file}`/etc/strata/grants.d/<name>.json` and the credential
            `strata-<name>`.
          '';
        };
        unit = mkOption {
          type = serviceUnit;
          default = "${name}.service";
          defaultText = literalExpression ''"''${name}.service"'';
          example = "reports-exporter.service";
          description = ''
            The only service unit that gets the token. The module adds the
            credential to {option}`systemd.services.<unit>` (the name
            without `.service`), which must be a service NixOS knows: one
            declared in the configuration or shipped by a package in
            {option}`systemd.packages`.
          '';
        };
        service = mkOption {
          type = types.enum [ "fs" ];
          default = "fs";
          description = "The Strata service the token is for.";
        };
        actions = mkOption {
          type = types.nonEmptyListOf (types.enum fsActions);
          example = [
            "list"
            "stat"
            "open"
            "read"
          ];
          description = ''
            What the token allows (api/protocol.md). `delegate` lets the unit
            hand narrower tokens to helpers (`strata-ctl delegate`).
            Definitions from several modules are concatenated; the file lists
            each action once.
          '';
        };
        pathPrefix = mkOption {
          type = pathPrefix;
          example = "/srv/data";
          description = ''
            The directory the token reaches, written as `realpath` would
            print it. It must lie in one of
            {option}`services.strata.fs.paths`.
          '';
        };
        ttl = mkOption {
          type = types.nullOr (types.ints.between 1 ttlCeiling);
          default = null;
          example = 3600;
          description = ''
            Lifetime in seconds of each token minted for the unit, at most
            {option}`services.strata.token.maxTtl`; `null`: identity's
            default ({option}`services.strata.token.defaultTtl`). The token
            is revoked sooner, when the unit stops.
          '';
        };
      };
    };

  grants = lib.attrValues cfg.grants;
  roots = cfg.settings.fs.STRATA_FS_ROOTS;
  maxTtl = cfg.settings.identity.STRATA_TOKEN_MAX_TTL;

  # What identity reads: exactly the fields of a grant file, ttl_seconds
  # only when set.
  grantFile =
    g:
    builtins.toJSON (
      {
        inherit (g) unit service;
        actions = lib.unique g.actions;
        path_prefix = g.pathPrefix;
      }
      // lib.optionalAttrs (g.ttl != null) { ttl_seconds = g.ttl; }
    );

  isUnder = p: r: r == "/" || p == r || hasPrefix "${r}/" p;
  outsideRoots = filter (g: !lib.any (isUnder g.pathPrefix) roots) grants;
  aboveMaxTtl = filter (g: g.ttl != null && g.ttl > maxTtl) grants;
  # identity would wait on itself for its own token.
  ownUnits = [
    "strata-identity.service"
    "strata-fs.service"
    "strata-supervisor.service"
  ];
  forOwnUnits = filter (g: lib.elem g.unit ownUnits) grants;
  showGrants = gs: concatStringsSep ", " (map (g: "services.strata.grants.${g.name}") gs);

  strataCtl = lib.getExe' (lib.getBin cfg.package) "strata-ctl";

  # What one consuming unit gets, for all of its grants (several grants may
  # name one unit). Lists only, so that they are appended to the unit's own
  # settings.
  consumer = unitGrants: {
    wants = [ "strata-identity-credentials.socket" ];
    after = [ "strata-identity-credentials.socket" ];
    # Its running token was minted from the old grant: a changed grant
    # restarts the unit, which revokes that token at the stop and fetches
    # one from the new grant at the start.
    restartTriggers = map grantFile unitGrants;
    serviceConfig = {
      LoadCredential = map (g: "strata-${g.name}:/run/strata/credentials.sock") unitGrants;
      # '+': as root, whom identity takes as administrator; %n: this unit.
      # systemd runs it however the invocation ends (stop, failure, kill),
      # and before the next start of a Restart= unit.
      ExecStopPost = [ "+${strataCtl} revoke-unit %n" ];
    };
  };
in
{
  options.services.strata.grants = mkOption {
    type = types.attrsOf (types.submodule grantOptions);
    default = { };
    example = literalExpression ''
      {
        # reader.service gets, as its credential strata-reader, a token that
        # lists and reads /srv/data; it is revoked when the unit stops.
        reader = {
          actions = [ "list" "stat" "open" "read" ];
          pathPrefix = "/srv/data";
          ttl = 3600;
        };
      }
    '';
    description = ''
      Grants (docs/grants.md): which service unit gets which capability when
      systemd starts it. Each is written to
      {file}`/etc/strata/grants.d/<name>.json` (identity is reloaded when
      they change), and its unit gets
      `LoadCredential=strata-<name>:/run/strata/credentials.sock`,
      `Wants=` and `After=` on {file}`strata-identity-credentials.socket`,
      and `ExecStopPost=+strata-ctl revoke-unit %n`, which revokes the
      unit's tokens when it stops; the unit is restarted when one of its
      grants changes. Inside the unit, {command}`strata-ctl` finds the
      credential by itself; a program of its own reads
      {file}`$CREDENTIALS_DIRECTORY/strata-<name>`.
    '';
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = outsideRoots == [ ];
        message = ''
          ${
            concatStringsSep ", " (
              map (g: "services.strata.grants.${g.name}.pathPrefix = \"${g.pathPrefix}\"") outsideRoots
            )
          }
          is outside every directory fs serves, so identity would refuse the
          grant (services.strata.fs.paths = [ ${concatStringsSep " " (map (r: "\"${r}\"") roots)} ]).
          Serve the directory or change the prefix.
        '';
      }
      {
        assertion = aboveMaxTtl == [ ];
        message = ''
          ${showGrants aboveMaxTtl}: ttl is larger than
          services.strata.token.maxTtl (${toString maxTtl} s), so identity
          would refuse the grant. Lower ttl or raise maxTtl.
        '';
      }
      {
        assertion = forOwnUnits == [ ];
        message = ''
          ${showGrants forOwnUnits}: the unit of a grant cannot be one of
          Strata's own services (${concatStringsSep ", " ownUnits}).
        '';
      }
    ];

    # identity refuses, at load, a grant whose prefix fs does not serve
    # (docs/grants.md): the same directories as fs. A string, since
    # undeclared settings keys are passed through as they are.
    services.strata.settings.identity.STRATA_GRANT_ROOTS = lib.mkDefault (concatStringsSep ":" roots);

    environment.etc = lib.listToAttrs (
      map (g: lib.nameValuePair "strata/grants.d/${g.name}.json" { text = grantFile g; }) grants
    );

    systemd.services =
      lib.mapAttrs' (
        unit: unitGrants: lib.nameValuePair (lib.removeSuffix ".service" unit) (consumer unitGrants)
      ) (lib.groupBy (g: g.unit) grants)
      // {
        # identity rereads the directory on `systemctl reload` (SIGHUP), so
        # a switch that changes the grants reloads it. Not a restart, which
        # would drop identity's connections for nothing (the record of the
        # tokens it minted is on disk and would survive it).
        strata-identity.reloadTriggers = [
          (builtins.hashString "sha256" (builtins.toJSON (lib.mapAttrs (_: grantFile) cfg.grants)))
        ];
      };
  };
}
