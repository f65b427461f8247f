# The NixOS options that modules/strata.nix sets, declared as NixOS declares
# them, for evaluating the module with nixpkgs' lib alone
# (nix-community/nixpkgs.lib has lib/ but not nixos/).
#
# Keep this list exactly as long as the module needs and no longer: an option
# the module sets that is not declared here makes the evaluation fail, as it
# would on NixOS if NixOS did not declare it. Each declaration names the NixOS
# file it mirrors, with the same type (so the same merge and checks) and
# default. Only the sub-options of systemd units that the module sets are
# declared; NixOS has many more.
#
# When scripts/eval-module.sh is given a full nixpkgs checkout, it evaluates
# the module with the real NixOS modules instead and checks that every option
# declared here exists there with the same type description.
{ lib, ... }:

let
  inherit (lib) mkOption types;

  # nixos/lib/systemd-lib.nix: unitNameType
  unitNameType = types.strMatching "[a-zA-Z0-9@%:_.\\-]+[.](service|socket|device|mount|automount|swap|target|path|timer|scope|slice)";

  # nixos/lib/systemd-unit-options.nix: unitOption. Lists (repeatable
  # settings such as BindReadOnlyPaths=) are concatenated across
  # definitions; anything else must be defined once or with equal values.
  unitOption = lib.mkOptionType {
    name = "systemd option";
    merge =
      loc: defs:
      let
        defs' = lib.filterOverrides defs;
      in
      if lib.isList (lib.head defs').value then
        lib.concatMap (
          def:
          if builtins.typeOf def.value == "list" then
            def.value
          else
            throw "The definitions for systemd unit options should be either all lists or all non-lists, but for the option ${lib.showOption loc} they are mixed"
        ) defs'
      else
        lib.mergeEqualOption loc defs';
  };

  # nixos/lib/systemd-unit-options.nix: checkService (the [Service] values
  # NixOS validates at evaluation time).
  checkService =
    attrs:
    let
      plain = lib.mapAttrs (_: v: if v ? _type && v ? content then v.content else v) attrs;
      oneOf = name: values: !(plain ? ${name}) || lib.elem plain.${name} values;
    in
    oneOf "Type" [
      "exec"
      "simple"
      "forking"
      "oneshot"
      "dbus"
      "notify"
      "notify-reload"
      "idle"
    ]
    && oneOf "Restart" [
      "no"
      "on-success"
      "on-failure"
      "on-abnormal"
      "on-abort"
      "always"
    ];

  # nixos/lib/systemd-unit-options.nix: sharedOptions.wantedBy
  wantedBy = mkOption {
    type = types.listOf unitNameType;
    default = [ ];
    description = "Units that want (i.e. depend on) this unit.";
  };
in
{
  # modules/generic/meta-maintainers.nix (the value is kept per module file,
  # as there; the elements are not checked against lib.maintainers there
  # either, since the list's own merge bypasses the element type)
  options.meta.maintainers = mkOption {
    type =
      types.listOf (
        lib.mkOptionType {
          name = "maintainer";
          check = lib.isAttrs;
        }
      )
      // {
        merge = _loc: defs: lib.listToAttrs (map (d: lib.nameValuePair d.file d.value) defs);
      };
    default = [ ];
    description = "List of maintainers of each module.";
  };

  # nixos/modules/misc/meta.nix (kept per module file, as there)
  options.meta.doc = mkOption {
    type = types.path // {
      merge = _loc: defs: defs;
    };
    internal = true;
    description = "Documentation prologue for the set of options of each module.";
  };

  # nixos/modules/misc/assertions.nix
  options.assertions = mkOption {
    type = types.listOf types.unspecified;
    internal = true;
    default = [ ];
    description = "Conditions that must hold; NixOS refuses to build the system otherwise.";
  };

  # nixos/modules/misc/assertions.nix
  options.warnings = mkOption {
    type = types.listOf types.str;
    internal = true;
    default = [ ];
    description = "Warnings printed when the system is built.";
  };

  # nixos/modules/config/system-path.nix
  options.environment.systemPackages = mkOption {
    type = types.listOf types.package;
    default = [ ];
    description = "Packages installed in the system profile (on PATH).";
  };

  # nixos/modules/system/etc/etc.nix (etcOpts: the sub-option the module
  # sets; NixOS turns `text` into the file's `source`)
  options.environment.etc = mkOption {
    type = types.attrsOf (
      types.submodule {
        options.text = mkOption {
          type = types.nullOr types.lines;
          default = null;
          description = "Text of the file.";
        };
      }
    );
    default = { };
    description = "Set of files that have to be linked in {file}`/etc`.";
  };

  # nixos/modules/system/boot/systemd.nix
  options.systemd.packages = mkOption {
    type = types.listOf types.package;
    default = [ ];
    description = "Packages providing systemd units and hooks.";
  };

  # nixos/modules/system/boot/systemd/tmpfiles.nix
  options.systemd.tmpfiles.packages = mkOption {
    type = types.listOf types.package;
    default = [ ];
    apply = map lib.getLib;
    description = "Packages whose lib/tmpfiles.d/*.conf rules are installed.";
  };

  # nixos/modules/config/users-groups.nix (userOpts: the sub-options the
  # module sets)
  options.users.users = mkOption {
    type = types.attrsOf (
      types.submodule {
        options = {
          isSystemUser = mkOption {
            type = types.bool;
            default = false;
            description = "Whether this is a system user (uid below 1000, no home).";
          };
          group = mkOption {
            type = types.str;
            default = "";
            description = "The user's primary group.";
          };
          description = mkOption {
            type = types.passwdEntry types.str;
            default = "";
            description = "A short description of the user account (GECOS).";
          };
        };
      }
    );
    default = { };
    description = "Additional user accounts to be created automatically by the system.";
  };

  # nixos/modules/config/users-groups.nix (groupOpts: none of its
  # sub-options is set, an empty group is declared)
  options.users.groups = mkOption {
    type = types.attrsOf (types.submodule { });
    default = { };
    description = "Additional groups to be created automatically by the system.";
  };

  # nixos/modules/system/boot/systemd.nix, systemdUtils.types.targets
  options.systemd.targets = mkOption {
    type = types.attrsOf (types.submodule { options = { inherit wantedBy; }; });
    default = { };
    description = "Definition of systemd target units.";
  };

  # nixos/modules/system/boot/systemd.nix, systemdUtils.types.sockets
  options.systemd.sockets = mkOption {
    type = types.attrsOf (types.submodule { options = { inherit wantedBy; }; });
    default = { };
    description = "Definition of systemd socket units.";
  };

  # nixos/modules/system/boot/systemd.nix, systemdUtils.types.services
  # (sub-options from nixos/lib/systemd-unit-options.nix: serviceOptions)
  options.systemd.services = mkOption {
    type = types.attrsOf (
      types.submodule {
        options = {
          environment = mkOption {
            type =
              with types;
              attrsOf (
                nullOr (oneOf [
                  str
                  path
                  package
                ])
              );
            default = { };
            description = "Environment variables passed to the service's processes.";
          };

          # nixos/lib/systemd-unit-options.nix: sharedOptions
          inherit wantedBy;

          # nixos/lib/systemd-unit-options.nix: commonUnitOptions
          wants = mkOption {
            type = types.listOf unitNameType;
            default = [ ];
            description = "Start the specified units when this unit is started.";
          };
          after = mkOption {
            type = types.listOf unitNameType;
            default = [ ];
            description = "If the specified units are started at the same time as this unit, delay this unit until they have started.";
          };

          # nixos/lib/systemd-unit-options.nix: serviceOptions
          restartTriggers = mkOption {
            type = types.listOf types.unspecified;
            default = [ ];
            description = "Items whose change between generations restarts the service.";
          };
          reloadTriggers = mkOption {
            type = types.listOf unitOption;
            default = [ ];
            description = "Items whose change between generations reloads the service.";
          };

          serviceConfig = mkOption {
            type = types.addCheck (types.attrsOf unitOption) checkService;
            default = { };
            description = "Settings of the [Service] section of the unit.";
          };
        };
      }
    );
    default = { };
    description = "Definition of systemd service units.";
  };
}
