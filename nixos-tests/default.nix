# The NixOS VM tests, built by `nix flake check` (checks.<system>.<name>).
# Each runs the shared scenarios of ./scenarios inside a NixOS VM configured
# through services.strata, plus the checks only a NixOS machine allows
# (module settings reaching the services, a reboot).
#
# Scenario coverage: 02-activation, 03-tokens, 04-paths, 11-stop-target
# (basic); 06-restart-persistence (persistence); 10-nonadmin (non-admin);
# 05-fs-kill, 07-watchdog, 08-supervisor (watchdog); 09-security
# (hardening). 01-units is left to the container runner: it runs
# `systemctl enable`, which a NixOS machine's read-only unit directories do
# not allow (the module's wantedBy settings are its NixOS counterpart, and
# basic checks them).
{ pkgs, self }:
let
  args = { inherit pkgs self; };
in
{
  basic = import ./basic.nix args;
  persistence = import ./persistence.nix args;
  non-admin = import ./non-admin.nix args;
  watchdog = import ./watchdog.nix args;
  hardening = import ./hardening.nix args;
}
