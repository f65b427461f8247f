# watchdog: a SIGSTOP'd service stops sending WATCHDOG=1 and systemd
# restarts it (scenario 07 for identity, here for fs too); a SIGKILL'd fs is
# replaced on the next call (scenario 05); the supervisor reports the
# services healthy (scenario 08).
{ testers, common }:
testers.runNixOSTest {
  name = "strata-watchdog";

  nodes.machine = {
    imports = [ common.node ];
  };

  testScript = common.helpers + ''
    import json

    machine.wait_for_unit("strata.target")

    scenario("07-watchdog")
    scenario("05-fs-kill")
    scenario("08-supervisor")
    scenario("12-supervisor-restart")

    with subtest("a SIGSTOP'd fs is restarted"):
        machine.succeed("systemctl start strata.target")
        machine.wait_for_unit("strata-fs.socket")
        assert json.loads(ctl("health fs"))["status"] == "ok"
        pid = machine.succeed("systemctl show -p MainPID --value strata-fs.service").strip()
        assert pid != "0", "fs has no MainPID after a call"
        machine.succeed(f"kill -STOP {pid}")
        # WatchdogSec=10s, then SIGABRT, then SIGKILL after TimeoutAbortSec,
        # then Restart=on-failure; or the supervisor's own restart after its
        # failure threshold, whichever comes first. Either way a new process
        # within a minute or so.
        # (A call each round, in case fs was stopped rather than restarted:
        # then the socket starts it again.)
        machine.wait_until_succeeds(
            "timeout 5 strata-ctl health fs >/dev/null 2>&1;"
            " p=$(systemctl show -p MainPID --value strata-fs.service);"
            f" [ \"$p\" != 0 ] && [ \"$p\" != {pid} ]"
            " && [ $(systemctl show -p ActiveState --value strata-fs.service) = active ]",
            timeout=90,
        )
        print(machine.succeed("journalctl --no-pager -u strata-fs.service -u strata-supervisor.service | tail -n 30"))
        assert json.loads(ctl("health fs"))["status"] == "ok"
  '';
}
