# basic: strata.target comes up at boot with the sockets listening and
# identity and fs not started; the module's settings reach the services; the
# issue / list / open / read / revoke / refused flow and the path
# confinement scenarios pass.
{ testers, common }:
testers.runNixOSTest {
  name = "strata-basic";

  nodes.machine = {
    imports = [ common.node ];

    # Beyond the defaults: a second served tree, an admin who is not root,
    # shorter TTLs, a debug log.
    services.strata = {
      fs.paths = [
        "/srv"
        "/var/lib/shared-reports"
      ];
      admins.users = [ "alice" ];
      token.defaultTtl = 600;
      token.maxTtl = 3600;
      logLevel = "debug";
    };

    users.users.alice.isNormalUser = true;
    systemd.tmpfiles.rules = [
      "d /var/lib/shared-reports 0755 root root -"
      "f+ /var/lib/shared-reports/q3.txt 0644 root root - third quarter"
    ];
  };

  testScript = common.helpers + ''
    import json

    machine.wait_for_unit("multi-user.target")

    with subtest("strata.target is started at boot (wantedBy multi-user.target)"):
        machine.wait_for_unit("strata.target")
        for name in ["identity", "fs", "supervisor"]:
            machine.wait_for_unit(f"strata-{name}.socket")
            machine.succeed(f"test -S /run/strata/{name}.sock")
            assert machine.succeed(f"stat -c %a /run/strata/{name}.sock").strip() == "666"
        machine.wait_for_unit("strata-supervisor.service")

    with subtest("identity and fs are not started before the first call"):
        assert active_state("strata-identity.service") == "inactive"
        assert active_state("strata-fs.service") == "inactive"

    with subtest("/run/strata is laid out by the package's tmpfiles rule"):
        assert machine.succeed("stat -c '%a %U:%G' /run/strata").strip() == "1775 root:strata-identity"

    with subtest("the module's settings reach the units"):
        env = machine.succeed("systemctl show -p Environment --value strata-identity.service")
        for want in ["STRATA_ADMIN_USERS=alice", "STRATA_TOKEN_DEFAULT_TTL=600", "STRATA_TOKEN_MAX_TTL=3600", "STRATA_LOG=debug"]:
            assert want in env.split(), f"{want} not in {env}"
        env = machine.succeed("systemctl show -p Environment --value strata-fs.service")
        assert "STRATA_FS_ROOTS=/srv:/var/lib/shared-reports" in env.split(), env
        binds = machine.succeed("systemctl show -p BindReadOnlyPaths --value strata-fs.service")
        assert "/var/lib/shared-reports" in binds, binds

    with subtest("strata-ctl is on PATH and the first call starts the service"):
        health = json.loads(ctl("health fs"))
        assert health["status"] == "ok", health
        assert active_state("strata-fs.service") == "active"

    with subtest("the drop-in's values are the ones in effect"):
        pid = machine.succeed("systemctl show -p MainPID --value strata-fs.service").strip()
        environ = machine.succeed(f"tr '\\0' '\\n' < /proc/{pid}/environ").split("\n")
        assert "STRATA_FS_ROOTS=/srv:/var/lib/shared-reports" in environ, environ
        assert "STRATA_LOG=debug" in environ, environ

    with subtest("an admin named in services.strata.admins.users may issue"):
        out = json.loads(ctl("issue --service fs --actions open,read --path-prefix /var/lib/shared-reports", user="alice"))
        token = out["token"]
        # the default TTL is services.strata.token.defaultTtl
        now = int(machine.succeed("date +%s"))
        assert now + 540 <= out["expires"] <= now + 660, out
        # and the second served tree is served
        assert ctl("cat /var/lib/shared-reports/q3.txt", user="alice", token=token) == "third quarter"
        # a TTL above services.strata.token.maxTtl is refused (code 1)
        ttl = json.dumps({"service": "fs", "actions": ["read"], "path_prefix": "/srv", "ttl_seconds": 7200})
        ctl(f"identity.issue {shlex.quote(ttl)}", expect=11)
        # strata-test is not an admin
        ctl("issue --service fs --actions read --path-prefix /srv", user="strata-test", expect=13)

    scenario("01-units")
    scenario("02-activation")
    scenario("03-tokens")
    scenario("04-paths")
    scenario("16-audit-log")
    scenario("24-control")
    scenario("25-compat-v032")
    scenario("11-stop-target")
  '';
}
