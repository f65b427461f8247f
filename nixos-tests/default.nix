# The NixOS VM tests, built by `nix flake check` (checks.<system>.<name>).
# Each runs the shared scenarios of ./scenarios inside a NixOS VM configured
# through services.strata, plus the checks only a NixOS machine allows
# (module settings reaching the services, a reboot).
#
# Scenario coverage: 02-activation, 03-tokens, 04-paths, 11-stop-target
# (basic); 06-restart-persistence (persistence); 10-nonadmin (non-admin);
# 05-fs-kill, 07-watchdog, 08-supervisor, 12-supervisor-restart
# (watchdog); 09-security (hardening); 13-fs-kill-under-load,
# 14-identity-kill-revocations, 15-identity-failing, 17-audit-flood,
# 18-audit-forgery, 19-connection-cap (faults);
# 01-units, 16-audit-log, 24-control and 25-compat-v032 (basic; 01
# enables with --runtime, which a NixOS machine's read-only unit
# directories allow; 25 takes strata-v032 from the package's tools);
# 21-grants is done through services.strata.grants instead of hand-written
# units (grants); 23-grants-identity-restart runs in the container only so
# far. fleet is a test of three machines (etcd and services.strata.fleet)
# with no scenario script of its own: the container runner has its own.
#
# Called by package.nix (passthru.tests, which flake.nix's checks take), with
# the very package under test.
{ testers, package }:
let
  args = {
    inherit testers;
    common = import ./common.nix { inherit package; };
  };
in
{
  basic = import ./basic.nix args;
  persistence = import ./persistence.nix args;
  non-admin = import ./non-admin.nix args;
  watchdog = import ./watchdog.nix args;
  hardening = import ./hardening.nix args;
  faults = import ./faults.nix args;
  grants = import ./grants.nix args;
  fleet = import ./fleet.nix args;
}
