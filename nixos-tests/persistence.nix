# persistence: the signing key and the revocations survive `systemctl
# restart` of each service (scenario 06, plus the supervisor) and a reboot
# of the VM: a token issued before still verifies and reads, a token revoked
# before is still refused.
{ testers, common }:
testers.runNixOSTest {
  name = "strata-persistence";

  nodes.machine = {
    imports = [ common.node ];
  };

  testScript = common.helpers + ''
    import json

    machine.wait_for_unit("strata.target")

    scenario("06-restart-persistence")

    with subtest("tokens and a revocation from before the restarts and the reboot"):
        machine.succeed("mkdir -p /srv/persist && echo kept > /srv/persist/f && chmod -R a+rX /srv")
        good = json.loads(ctl("issue --service fs --actions open,read --path-prefix /srv/persist --ttl 3600"))
        bad = json.loads(ctl("issue --service fs --actions open,read --path-prefix /srv/persist --ttl 3600"))
        ctl(f"revoke {bad['cap_id']}")
        key = json.loads(ctl("identity.pubkey"))["result"]["public_key"]


    def check_state(when: str) -> None:
        with subtest(f"key and revocations {when}"):
            assert json.loads(ctl("identity.pubkey"))["result"]["public_key"] == key, f"public key changed {when}"
            assert ctl("cat /srv/persist/f", token=good["token"]) == "kept"
            ctl("cat /srv/persist/f", token=bad["token"], expect=12)
            verdict = json.loads(ctl(f"verify {shlex.quote(bad['token'])}"))
            assert verdict["revoked"] and not verdict["valid"], verdict


    check_state("before any restart")

    for unit in ["strata-identity.service", "strata-fs.service", "strata-supervisor.service"]:
        machine.succeed(f"systemctl restart {unit}")
        check_state(f"after restarting {unit}")

    with subtest("the signing key is on disk, readable by identity only"):
        key_file = machine.succeed("readlink -f /var/lib/strata/identity/signing.key").strip()
        assert machine.succeed(f"stat -c %a {key_file}").strip() == "600"

    machine.shutdown()
    machine.start()
    machine.wait_for_unit("strata.target")
    check_state("after a reboot")
  '';
}
