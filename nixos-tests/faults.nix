# faults: the fault-injection scenarios under load, inside a NixOS VM —
# fs killed with SIGKILL every 5 s under 32 checking clients (13), identity
# killed during a revocation storm (14), identity unable to start while fs
# keeps serving (15), a flood of allowed requests and of refusals whose
# every decision is counted exactly in the audit trail (17), forged or
# oversized audit entries and a flood of refusals without a token (18),
# a tampered trail that `strata-ctl audit verify` catches (20) and a full
# trail file system that makes fs refuse until space is freed (22).
# strata-loadgen comes with the package.
{ testers, common }:
testers.runNixOSTest {
  name = "strata-faults";

  nodes.machine = {
    imports = [ common.node ];
    # 32 client threads and fs restarts in a loop want some room.
    virtualisation.cores = 2;
    virtualisation.memorySize = 2048;
    # Scenario 17 writes 100,000+ trail records (about 30 MB) on top of
    # the other scenarios' journal; room to spare.
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
    scenario("20-audit-tamper")
    scenario("22-audit-full-disk")
  '';
}
