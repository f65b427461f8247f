# What every Strata VM test shares: the machine (the module, enabled, with
# the package under test, plus the tools and the scenario scripts the tests
# run inside it) and the Python helpers of the test scripts.
{ package }:
{
  # The NixOS configuration of the machine under test.
  node =
    {
      config,
      lib,
      options,
      pkgs,
      ...
    }:
    {
      imports = [ ../modules/strata.nix ];

      services.strata.enable = true;
      services.strata.package = package;

      # The test instrumentation forwards every journal entry to the serial
      # console at debug level, and the console is slow: the audit floods
      # (scenario 17), the load (13) and logLevel = "debug" would then run at
      # the console's pace and could trip the scenarios' timeouts. The
      # journal itself keeps everything; the scenarios read it there.
      # (services.journald.settings is recent; older NixOS has extraConfig,
      # where the later line wins.)
      services.journald =
        if options.services.journald ? settings then
          { settings.Journal.MaxLevelConsole = lib.mkForce "warning"; }
        else
          { extraConfig = lib.mkAfter "MaxLevelConsole=warning"; };

      # The scenarios of nixos-tests/scenarios, the same files the container
      # runner (scripts/container-test.sh) copies into its Debian machine.
      environment.etc."strata-tests".source = ./scenarios;

      # What the scenarios take from PATH besides strata-ctl and systemd:
      # jq to read the JSON answers; runuser, ss and pgrep are in the base
      # system already (util-linux, iproute2, procps).
      # strata-loadgen (scenarios 13 and 17) and strata-v032 (25) come from the package's tools
      # output; the system PATH otherwise has only strata-ctl.
      environment.systemPackages = [
        pkgs.jq
        config.services.strata.package.tools
      ];

      # The ordinary user of the non-admin scenario (STRATA_TEST_USER).
      users.users.strata-test = {
        isNormalUser = true;
        description = "Strata test user (not an administrator)";
      };

      # The scenarios' test data lives under /srv, the default served path.
      systemd.tmpfiles.rules = [ "d /srv 0755 root root -" ];
    };

  # Prepended to every test script.
  helpers = ''
    import shlex

    # As scripts/container-test.sh runs them: as root, with a clean
    # environment, from the copy in /etc/strata-tests.
    SCENARIO_ENV = (
        "env -i PATH=/run/wrappers/bin:/run/current-system/sw/bin"
        " HOME=/root LANG=C.UTF-8 TERM=dumb STRATA_TEST_USER=strata-test"
    )


    def journal_cursor() -> str:
        out = machine.succeed("journalctl -n0 --show-cursor --no-pager")
        for line in out.splitlines():
            if line.startswith("-- cursor: "):
                return line[len("-- cursor: "):]
        return ""


    def scenario(name: str) -> None:
        """Run nixos-tests/scenarios/<name>.sh in the VM; on failure, show
        what the strata units logged meanwhile."""
        with subtest(f"scenario {name}"):
            cursor = journal_cursor()
            rc, out = machine.execute(
                f"{SCENARIO_ENV} timeout --kill-after=10 300"
                f" bash /etc/strata-tests/{name}.sh 2>&1",
                timeout=330,
            )
            print(out)
            if rc != 0:
                after = f"--after-cursor={shlex.quote(cursor)}" if cursor else "-n 200"
                _, journal = machine.execute(
                    f"journalctl --no-pager -o short-precise {after} -u 'strata*'"
                )
                print(journal)
                raise Exception(f"scenario {name} failed (exit {rc})")


    def ctl(args: str, expect: int = 0, user: str = "root", token: str = "") -> str:
        """strata-ctl ARGS in the VM as USER; asserts its exit status."""
        env = f"STRATA_TOKEN={shlex.quote(token)} " if token else ""
        cmd = f"{env}strata-ctl {args}"
        if user != "root":
            cmd = f"runuser -u {user} -- env {cmd}"
        rc, out = machine.execute(cmd)
        assert rc == expect, f"'{cmd}' exited {rc}, expected {expect}: {out}"
        return out.strip()


    def active_state(unit: str) -> str:
        return machine.succeed(f"systemctl show -p ActiveState --value {unit}").strip()
  '';
}
