# hardening: `systemd-analyze security` rates each Strata service at an
# overall exposure of 2.0 or less (scenario 09), as NixOS installs them:
# the packaged units plus the module's drop-ins.
{ testers, common }:
testers.runNixOSTest {
  name = "strata-hardening";

  nodes.machine = {
    imports = [ common.node ];
  };

  testScript = common.helpers + ''
    machine.wait_for_unit("strata.target")

    scenario("09-security")

    with subtest("the drop-ins keep the sandbox of the packaged units"):
        for unit in ["strata-identity", "strata-fs", "strata-supervisor"]:
            show = machine.succeed(
                f"systemctl show -p NoNewPrivileges -p ProtectSystem -p CapabilityBoundingSet {unit}.service"
            )
            assert "NoNewPrivileges=yes" in show, show
            assert "ProtectSystem=strict" in show, show
            assert "CapabilityBoundingSet=\n" in show + "\n", show
  '';
}
