# faults: the fault-injection scenarios under load, inside a NixOS VM —
# fs killed with SIGKILL every 5 s under 32 checking clients (13), identity
# killed during a revocation storm (14), identity unable to start while fs
# keeps serving (15), and a flood of allowed requests that must not push
# a single decision out of the journal (17), and forged or oversized audit
# entries and a flood of refusals without a token (18). strata-loadgen
# comes with the package.
{ testers, common }:
testers.runNixOSTest {
  name = "strata-faults";

  nodes.machine = {
    imports = [ common.node ];
    # 32 client threads and fs restarts in a loop want some room.
    virtualisation.cores = 2;
    virtualisation.memorySize = 2048;
    # Scenario 17 writes 100,000+ journal entries (about 100 MB) and checks
    # every one is kept: the default 1 GiB disk would leave journald's
    # SystemMaxUse= (10% of it) too small, and rotation would drop some.
    virtualisation.diskSize = 4096;
  };

  testScript = common.helpers + ''
    machine.wait_for_unit("strata.target")

    scenario("13-fs-kill-under-load")
    scenario("14-identity-kill-revocations")
    scenario("15-identity-failing")
    scenario("17-audit-flood")
    scenario("18-audit-forgery")
    scenario("19-connection-cap")
  '';
}
