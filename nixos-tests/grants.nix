# grants: what scenario 21 does with hand-written units and grant files,
# done through services.strata.grants (docs/grants.md). A DynamicUser
# consumer lists its prefix with plain strata-ctl and the credential the
# module declared; a second unit that declares the same credential by hand
# gets no token and fails, and identity records why; the consumer's token,
# copied out, is refused to root's shell and to another unit (it is bound
# to the consumer), with fs's audit records; stopping the consumer
# revokes its token (fs refuses it within the usual 100 ms, checked here
# within 5 s: a VM's clock is not the container's); a restart gets a fresh
# token; a switch that adds a grant reloads identity without restarting it
# or the consumer of the unchanged grant.
{ testers, common }:
testers.runNixOSTest {
  name = "strata-grants";

  nodes.machine =
    {
      config,
      lib,
      pkgs,
      ...
    }:
    let
      strataCtl = lib.getExe' (lib.getBin config.services.strata.package) "strata-ctl";
      # A unit that lists /srv/granted with the credential it was handed.
      # For this test only, it also copies the token out (from ExecStart=:
      # a '+' command does not see the credentials) so that the test can
      # follow it after the stop.
      consumer = credential: {
        description = "Strata grants test: consumer of ${credential}";
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
          DynamicUser = true;
          RuntimeDirectory = "%N";
          ExecStart = [
            "${strataCtl} ls /srv/granted"
            "${pkgs.runtimeShell} -c 'cat \"$$CREDENTIALS_DIRECTORY/${credential}\" >\"$$RUNTIME_DIRECTORY/token\"'"
          ];
        };
      };
    in
    {
      imports = [ common.node ];

      services.strata.grants.reader = {
        actions = [
          "list"
          "stat"
          "open"
          "read"
        ];
        pathPrefix = "/srv/granted";
        ttl = 600;
      };

      # The consumer of the grant: nothing about Strata in it; the module
      # adds the credential, the ordering and the revocation at stop.
      systemd.services.reader = consumer "strata-reader";

      # Not the grant's unit, but declares its credential by hand.
      systemd.services.thief = lib.recursiveUpdate (consumer "strata-reader") {
        wants = [ "strata-identity-credentials.socket" ];
        after = [ "strata-identity-credentials.socket" ];
        serviceConfig.LoadCredential = [ "strata-reader:/run/strata/credentials.sock" ];
      };

      systemd.tmpfiles.rules = [
        "d /srv/granted 0755 root root -"
        "f+ /srv/granted/hello.txt 0644 root root - hello"
      ];

      # The same machine with one more grant, switched to at the end.
      specialisation.more.configuration = {
        services.strata.grants.second = {
          actions = [ "list" ];
          pathPrefix = "/srv/granted";
        };
        systemd.services.second = consumer "strata-second";
      };
    };

  testScript = common.helpers + ''
    import json

    GRANTS_LOADED = "journalctl -u strata-identity.service -o cat | grep -q {}"


    def prop(unit: str, name: str) -> str:
        return machine.succeed(f"systemctl show -p {name} --value {unit}").strip()


    def token_of(unit: str) -> str:
        token = machine.succeed(f"cat /run/{unit}/token").strip()
        assert token, f"{unit}'s credential is empty"
        return token


    def whoami(token: str) -> dict:
        return json.loads(ctl("whoami", token=token))


    machine.wait_for_unit("strata.target")

    with subtest("the module renders the grant file, and identity loads it"):
        grant = json.loads(machine.succeed("cat /etc/strata/grants.d/reader.json"))
        assert grant == {
            "unit": "reader.service",
            "service": "fs",
            "actions": ["list", "stat", "open", "read"],
            "path_prefix": "/srv/granted",
            "ttl_seconds": 600,
        }, grant
        env = prop("strata-identity.service", "Environment")
        assert "STRATA_GRANT_ROOTS=/srv" in env.split(), env
        ctl("health identity")
        machine.wait_until_succeeds(
            GRANTS_LOADED.format(shlex.quote("loaded 1 grant(s): reader; refused 0")), timeout=20
        )

    with subtest("the consumer's unit has what the module added, and its own settings"):
        cred = prop("reader.service", "LoadCredential")
        assert "strata-reader:/run/strata/credentials.sock" in cred, cred
        for dep in ["Wants", "After"]:
            assert "strata-identity-credentials.socket" in prop("reader.service", dep).split(), dep
        post = prop("reader.service", "ExecStopPost")
        assert "revoke-unit" in post and "reader.service" in post, post
        assert prop("reader.service", "DynamicUser") == "yes"

    with subtest("a DynamicUser consumer lists its prefix with plain strata-ctl"):
        cursor = journal_cursor()
        machine.succeed("systemctl start reader.service")
        out = machine.succeed(f"journalctl -u reader.service -o cat --after-cursor={shlex.quote(cursor)}")
        assert "hello.txt" in out, out
        token = token_of("reader")
        verdict = whoami(token)
        # What the grant says, minted for this start.
        assert verdict["valid"] is True and verdict["revoked"] is False, verdict
        assert verdict["service"] == "fs", verdict
        assert verdict["actions"] == ["list", "stat", "open", "read"], verdict
        assert verdict["constraints"]["path_prefix"] == "/srv/granted", verdict
        assert verdict["holder"] == {"unit": "reader.service"}, verdict
        print(f"reader.service holds capability {verdict['jti']}, expiring {verdict['exp']}")

    with subtest("copied out, the token is refused to root's shell and to another unit"):
        out = ctl("ls /srv/granted 2>&1", token=token, expect=13)
        assert "token is bound to unit reader.service" in out, out
        out = machine.fail(
            "systemd-run --quiet --wait --pipe --collect -p DynamicUser=yes "
            f"-E STRATA_TOKEN={shlex.quote(token)} $(command -v strata-ctl) ls /srv/granted 2>&1"
        )
        assert "token is bound to unit reader.service" in out and "is in run-" in out, out
        refusals = machine.succeed(
            "jq -c 'select(.code == 3 and (.reason | contains(\"bound to unit\")))' "
            "/var/log/strata/fs/audit.jsonl | wc -l"
        ).strip()
        assert refusals == "2", f"fs's trail holds {refusals} refusals of the copied token"

    with subtest("stopping the consumer revokes its token"):
        # fs refuses it as revoked (code 2, exit 12) once the ExecStopPost=
        # hook has revoked it and fs's revocation sync has learned it.
        ms = machine.succeed(
            "systemctl stop reader.service; t0=$(date +%s%N); "
            f"until STRATA_TOKEN={shlex.quote(token)} strata-ctl ls /srv/granted >/dev/null 2>&1; [ $? -eq 12 ]; do "
            "[ $(( ($(date +%s%N) - t0) / 1000000 )) -lt 5000 ] || exit 1; sleep 0.01; done; "
            "echo $(( ($(date +%s%N) - t0) / 1000000 ))"
        ).strip()
        print(f"fs refuses the stopped unit's token {ms} ms after 'systemctl stop' returned")
        assert whoami(token)["revoked"] is True

    with subtest("a restart gets a fresh token that works; the old one stays revoked"):
        cursor = journal_cursor()
        machine.succeed("systemctl start reader.service")
        out = machine.succeed(f"journalctl -u reader.service -o cat --after-cursor={shlex.quote(cursor)}")
        assert "hello.txt" in out, out
        fresh = token_of("reader")
        assert fresh != token, "the restarted unit got the old token"
        assert whoami(fresh)["revoked"] is False
        assert whoami(token)["revoked"] is True
        ctl("ls /srv/granted", token=token, expect=12)
        # systemctl restart runs the stop hook before the next start too.
        machine.succeed("systemctl restart reader.service")
        again = token_of("reader")
        assert again != fresh
        assert whoami(fresh)["revoked"] is True
        assert whoami(again)["revoked"] is False

    with subtest("a unit that declares the credential but is not the grant's unit gets no token"):
        cursor = journal_cursor()
        machine.fail("systemctl start thief.service")
        assert prop("thief.service", "Result") != "success"
        machine.wait_until_succeeds(
            f"journalctl -u strata-identity.service -o cat --after-cursor={shlex.quote(cursor)}"
            " | grep identity.credential | grep -q 'not for thief.service'",
            timeout=20,
        )
        machine.succeed("systemctl reset-failed thief.service")

    with subtest("a switch that adds a grant reloads identity, and leaves the other consumer running"):
        identity_pid = prop("strata-identity.service", "MainPID")
        assert identity_pid != "0"
        reader_run = prop("reader.service", "InvocationID")
        machine.succeed("/run/current-system/specialisation/more/bin/switch-to-configuration test")
        machine.succeed("test -f /etc/strata/grants.d/second.json")
        machine.wait_until_succeeds(
            GRANTS_LOADED.format(shlex.quote("loaded 2 grant(s): reader, second; refused 0")), timeout=20
        )
        assert prop("strata-identity.service", "MainPID") == identity_pid, "identity was restarted, not reloaded"
        assert prop("reader.service", "InvocationID") == reader_run, "reader.service was restarted"
        cursor = journal_cursor()
        machine.succeed("systemctl start second.service")
        out = machine.succeed(f"journalctl -u second.service -o cat --after-cursor={shlex.quote(cursor)}")
        assert "hello.txt" in out, out
  '';
}
