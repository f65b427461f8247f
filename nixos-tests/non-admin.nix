# non-admin: an ordinary user of the VM cannot issue a token (code 3, exit
# 13) but can use, and revoke, a token an admin handed over (scenario 10).
# Also: membership of a group in services.strata.admins.groups makes an
# administrator.
{ testers, common }:
testers.runNixOSTest {
  name = "strata-non-admin";

  nodes.machine = {
    imports = [ common.node ];

    services.strata.admins.groups = [ "strata-admins" ];
    users.groups.strata-admins = { };
    users.users.bob = {
      isNormalUser = true;
      extraGroups = [ "strata-admins" ];
    };
  };

  testScript = common.helpers + ''
    machine.wait_for_unit("strata.target")

    scenario("10-nonadmin")

    with subtest("a member of services.strata.admins.groups may issue, others may not"):
        machine.succeed("mkdir -p /srv/team && chmod a+rx /srv/team")
        ctl("issue --service fs --actions list --path-prefix /srv/team --quiet", user="bob")
        ctl("issue --service fs --actions list --path-prefix /srv/team --quiet", user="strata-test", expect=13)
  '';
}
