# fleet: three NixOS machines, each running a member of one etcd cluster
# (services.etcd) and Strata with services.strata.fleet (docs/fleet.md).
# Each node's identity makes its own key; node1 endorses the three keys with
# the fleet's root key (`strata-ctl fleet endorse`) and the test driver
# hands each node its endorsement; then every node switches to the
# configuration with the fleet (a specialisation). Checked: the module's
# settings reach the units; a fleet token issued on node1 is served by
# node2 and node3, a node-local one only by node1; a revocation on node3 is
# refused by node1 and node2 within 1 s of its acknowledgement; a key in
# etcd that the root did not endorse is ignored and logged; with etcd's
# leader stopped everything keeps working; node3 cut off from the others
# (its virtual cable unplugged) refuses fleet tokens with code 6 once
# maxStaleness has passed, says so in `strata-ctl fleet status`, keeps
# serving its node-local tokens, and after the partition heals enforces
# the revocation made meanwhile before it serves fleet tokens again, while
# the revocation it made itself during the partition reaches the others;
# etcd's members and a node's identity and fs restarted lose nothing.
#
# The root key is a fixture, fleet-snakeoil-root.json, made once with
# `strata-ctl fleet init --fleet vmtest`: the nodes' configuration needs the
# root *public* key at evaluation time (services.strata.fleet.rootPublicKey
# is a string of the configuration, as on a real host), and a key made by
# `fleet init` inside a VM exists only when the test runs. It guards
# nothing but this test's throw-away fleet; never use it anywhere else.
# The node keys, the endorsements and a second, rogue root are made in the
# VMs while the test runs.
{ testers, common }:
let
  root = builtins.fromJSON (builtins.readFile ./fleet-snakeoil-root.json);
  indices = [
    1
    2
    3
  ];
  maxStaleness = 5;

  node =
    index:
    { lib, nodes, ... }:
    let
      nameOf = i: "node${toString i}";
      ip = i: nodes.${nameOf i}.networking.primaryIPAddress;
    in
    {
      imports = [ common.node ];

      services.etcd = {
        enable = true;
        name = nameOf index;
        # Loopback too, for etcdctl's default endpoint in the test script.
        listenClientUrls = [
          "http://${ip index}:2379"
          "http://127.0.0.1:2379"
        ];
        advertiseClientUrls = [ "http://${ip index}:2379" ];
        listenPeerUrls = [ "http://${ip index}:2380" ];
        initialAdvertisePeerUrls = [ "http://${ip index}:2380" ];
        initialCluster = map (i: "${nameOf i}=http://${ip i}:2380") indices;
        initialClusterState = "new";
        initialClusterToken = "strata-fleet-test";
      };
      networking.firewall.allowedTCPPorts = [
        2379
        2380
      ];
      # The file every token of the test reads.
      systemd.tmpfiles.rules = [
        "d /srv/fleet 0755 root root -"
        "f+ /srv/fleet/hello 0644 root root - hello"
      ];

      # node1 keeps the root key (in real life it stays offline).
      environment.etc = lib.mkIf (index == 1) {
        "strata-fleet-test/root.json".source = ./fleet-snakeoil-root.json;
      };

      # The same machine, in the fleet. Switched to once the endorsement
      # is in place: identity cannot start without it (LoadCredential=),
      # and the endorsement needs identity's key, which identity makes at
      # its first start.
      specialisation.fleet.configuration = {
        services.strata.fleet = {
          enable = true;
          name = root.fleet;
          nodeId = "node-${toString index}";
          rootPublicKey = root.public_key;
          # Written by the test driver, root-only; identity gets a copy in
          # its credentials directory.
          endorsementFile = "/var/lib/strata-fleet/endorsement";
          etcd.endpoints = map (i: "http://${ip i}:2379") indices;
          inherit maxStaleness;
        };
      };
    };
in
testers.runNixOSTest {
  name = "strata-fleet";

  nodes = {
    node1 = node 1;
    node2 = node 2;
    node3 = node 3;
  };

  testScript =
    { nodes, ... }:
    ''
    import json
    import shlex
    import time

    FLEET = "${root.fleet}"
    ROOT_PUBLIC_KEY = "${root.public_key}"
    MAX_STALENESS = ${toString maxStaleness}
    NODES = {"node1": node1, "node2": node2, "node3": node3}
    NODE_ID = {node1: "node-1", node2: "node-2", node3: "node-3"}
    HELLO = "/srv/fleet/hello"
    ETCD_ADDRESSES = ${builtins.toJSON (map (i: nodes."node${toString i}".networking.primaryIPAddress) indices)}


    def ctl(node, args: str, expect: int = 0, token: str = "") -> str:
        """strata-ctl ARGS on NODE as root; asserts its exit status. Returns
        its output: stdout when it succeeds, stdout and stderr (the
        message) when it is expected to fail."""
        env = f"STRATA_TOKEN={shlex.quote(token)} " if token else ""
        both = " 2>&1" if expect != 0 else ""
        rc, out = node.execute(f"{env}strata-ctl {args}{both}")
        assert rc == expect, f"{node.name}: 'strata-ctl {args}' exited {rc}, expected {expect}: {out}"
        return out.strip()


    def issue(node, fleet: bool = True) -> dict:
        aud = f" --aud fleet:{FLEET}" if fleet else ""
        out = node.succeed(
            f"strata-ctl issue --service fs --actions open,read --path-prefix /srv/fleet --ttl 900{aud}"
        )
        return json.loads(out)


    def fleet_status(node) -> tuple[int, dict]:
        rc, out = node.execute("strata-ctl fleet status")
        return rc, json.loads(out)


    def until_refused(node, token: str, budget_ms: int, never_served: bool = False) -> int:
        """Reads HELLO with TOKEN on NODE every 10 ms until fs refuses it as
        revoked (code 2, exit 12); returns the milliseconds that took, as the
        VM counts them. NEVER_SERVED: the token must not be served (exit 0)
        meanwhile; other refusals (code 6, stale) may come first."""
        t = shlex.quote(token)
        served = "echo 'served a revoked token' >&2; exit 3" if never_served else ":"
        out = node.succeed(
            "t0=$(date +%s%N); "
            "while :; do "
            f"STRATA_TOKEN={t} strata-ctl cat {HELLO} >/dev/null 2>&1; rc=$?; "
            "[ $rc -eq 12 ] && break; "
            f"[ $rc -eq 0 ] && {{ {served}; }}; "
            f"[ $(( ($(date +%s%N) - t0) / 1000000 )) -lt {budget_ms} ] || exit 1; "
            "sleep 0.01; "
            "done; echo $(( ($(date +%s%N) - t0) / 1000000 ))"
        )
        message = ctl(node, f"cat {HELLO}", token=token, expect=12)
        assert "revoked" in message, f"{node.name}: refused, but not as revoked: {message}"
        return int(out.strip())


    def etcd_leader() -> str:
        status = json.loads(node1.succeed("etcdctl endpoint status -w json"))
        leader = status[0]["Status"]["leader"]
        members = json.loads(node1.succeed("etcdctl member list -w json"))["members"]
        return next(m["name"] for m in members if m["ID"] == leader)


    start_all()

    with subtest("the three etcd members form one cluster"):
        for node in NODES.values():
            node.wait_for_unit("etcd.service")
        node1.wait_until_succeeds("etcdctl endpoint health --cluster", timeout=60)
        members = json.loads(node1.succeed("etcdctl member list -w json"))["members"]
        assert sorted(m["name"] for m in members) == ["node1", "node2", "node3"], members

    with subtest("node1 endorses each node's identity key with the fleet's root"):
        node1.succeed("install -m 600 /etc/strata-fleet-test/root.json /root/root.json")
        for node in NODES.values():
            node.wait_for_unit("strata.target")
            key = json.loads(ctl(node, "identity.pubkey"))["result"]["public_key"]
            node_id = NODE_ID[node]
            endorsement = node1.succeed(
                "strata-ctl fleet endorse --root-key /root/root.json"
                f" --node-id {node_id} --node-key {shlex.quote(key)}"
            ).strip()
            checked = json.loads(
                node1.succeed(
                    f"printf '%s\\n' {shlex.quote(endorsement)} |"
                    f" strata-ctl fleet verify --root-public-key {ROOT_PUBLIC_KEY} --fleet {FLEET} -"
                )
            )
            assert checked["node_id"] == node_id and checked["public_key"] == key, checked
            node.succeed(
                "install -d -m 0700 /var/lib/strata-fleet && umask 077 && "
                f"printf '%s\\n' {shlex.quote(endorsement)} > /var/lib/strata-fleet/endorsement"
            )

    with subtest("every node switches to the fleet; the module's settings reach the units"):
        for node in NODES.values():
            node.succeed("/run/booted-system/specialisation/fleet/bin/switch-to-configuration test")
            node.succeed("systemctl restart strata-identity.service strata-fs.service")
        for node in NODES.values():
            for unit in ["strata-identity", "strata-fs"]:
                show = node.succeed(
                    f"systemctl show -p PrivateNetwork -p RestrictAddressFamilies -p IPAddressAllow"
                    f" -p IPAddressDeny -p Environment {unit}.service"
                )
                assert "PrivateNetwork=no" in show, show
                assert "AF_INET" in show and "AF_INET6" in show, show
                assert f"STRATA_FLEET_NAME={FLEET}" in show, show
                assert f"STRATA_NODE_ID={NODE_ID[node]}" in show, show
                assert f"STRATA_FLEET_MAX_STALENESS_SECS={MAX_STALENESS}" in show, show
                for address in ETCD_ADDRESSES:
                    assert address in show, show
            creds = node.succeed("systemctl show -p LoadCredential strata-identity.service")
            assert "fleet-endorsement" in creds and "/var/lib/strata-fleet/endorsement" in creds, creds
            # The endorsement stays root-only: identity reads its own copy.
            assert node.succeed("stat -c '%a %U' /var/lib/strata-fleet/endorsement").strip() == "600 root"
            # The module's own drop-in, not the packaged Debian one.
            assert "fleet.conf" not in node.succeed("systemctl cat strata-fs.service")
        for unit in ["strata-identity", "strata-fs"]:
            # With the network they now have, still within the bound the
            # hardening test sets without a fleet (1.4 and 1.6 under the
            # Debian drop-in, systemd 252).
            exposure = float(
                node1.succeed(
                    f"systemd-analyze security --no-pager {unit}.service"
                    " | sed -n 's/.*Overall exposure level.*: \\([0-9.]*\\).*/\\1/p'"
                ).strip()
            )
            print(f"{unit}.service in the fleet: exposure {exposure}")
            assert exposure <= 2.0, f"{unit}.service: exposure {exposure} above 2.0"

    with subtest("each identity publishes its key; each fs knows the three nodes"):
        node1.wait_until_succeeds(
            f"[ $(etcdctl get --prefix --keys-only /strata/{FLEET}/keys/ | grep -c .) -eq 3 ]", timeout=30
        )
        for node in NODES.values():
            node.wait_until_succeeds(
                "strata-ctl fleet status | jq -e '.state == \"fresh\""
                " and .nodes == [\"node-1\", \"node-2\", \"node-3\"]'",
                timeout=30,
            )
            rc, status = fleet_status(node)
            assert rc == 0 and status["name"] == FLEET, status
            assert status["max_staleness_ms"] == MAX_STALENESS * 1000, status
            overall = json.loads(ctl(node, "status"))
            assert overall["fleet"]["state"] == "fresh", overall

    with subtest("a fleet token issued on node1 is served on node2 and node3; a node-local one only on node1"):
        token = issue(node1)["token"]
        for node in NODES.values():
            assert ctl(node, f"cat {HELLO}", token=token) == "hello"
        local = issue(node1, fleet=False)["token"]
        assert ctl(node1, f"cat {HELLO}", token=local) == "hello"
        for node in [node2, node3]:
            ctl(node, f"cat {HELLO}", token=local, expect=12)

    with subtest("a revocation on node3 is refused on node1 and node2 within 1 s of its acknowledgement"):
        # Each of node1 and node2 is timed first once. The figure is the
        # test driver's, from node3's answer to the refusal seen on the
        # other node: an upper bound (it includes the driver's round trips).
        for first, second in [(node1, node2), (node2, node1)]:
            granted = issue(node1)
            for node in NODES.values():
                assert ctl(node, f"cat {HELLO}", token=granted["token"]) == "hello"
            ctl(node3, f"revoke {granted['cap_id']}")
            acked = time.monotonic()
            until_refused(first, granted["token"], budget_ms=10000)
            first_s = time.monotonic() - acked
            until_refused(second, granted["token"], budget_ms=10000)
            second_s = time.monotonic() - acked
            print(
                f"revoked on node3: refused on {first.name} within {first_s * 1000:.0f} ms,"
                f" then on {second.name} within {second_s * 1000:.0f} ms (driver's clock)"
            )
            assert first_s <= 1.0, f"{first.name} refused the revoked token only after {first_s:.3f} s"
            record = json.loads(node1.succeed(f"etcdctl get --print-value-only /strata/{FLEET}/revoked/{granted['cap_id']}"))
            assert record["cap_id"] == granted["cap_id"], record

    with subtest("a key in etcd that the root did not endorse is ignored and logged"):
        # A rogue root, and a key it endorses, written straight into etcd:
        # what a party with write access to etcd could try.
        node1.succeed(f"strata-ctl fleet init --out /root/rogue-root.json --fleet {FLEET}")
        rogue_key = json.loads(node1.succeed(f"strata-ctl fleet init --out /root/rogue-node.json --fleet {FLEET}"))
        rogue = node1.succeed(
            "strata-ctl fleet endorse --root-key /root/rogue-root.json"
            f" --node-id rogue --node-key {shlex.quote(rogue_key['public_key'])}"
        ).strip()
        entry = json.dumps(
            {"node_id": "rogue", "kid": rogue_key["kid"], "public_key": rogue_key["public_key"], "endorsement": rogue}
        )
        node1.succeed(f"etcdctl put /strata/{FLEET}/keys/rogue {shlex.quote(entry)}")
        for node in NODES.values():
            node.wait_until_succeeds(
                "journalctl -u strata-fs.service -o cat | grep 'not endorsed' | grep -q /strata/${root.fleet}/keys/rogue",
                timeout=20,
            )
            _, status = fleet_status(node)
            assert status["nodes"] == ["node-1", "node-2", "node-3"], status
        node1.succeed(f"etcdctl del /strata/{FLEET}/keys/rogue")

    with subtest("etcd's leader stopped: tokens are served and revocations reach every node"):
        leader = NODES[etcd_leader()]
        print(f"stopping the etcd leader, on {leader.name}")
        leader.succeed("systemctl stop etcd.service")
        others = [n for n in NODES.values() if n is not leader]
        others[0].wait_until_succeeds("etcdctl endpoint health", timeout=30)
        granted = issue(node1)
        for node in NODES.values():
            # Its fs may have been connected to the stopped member: it
            # moves to another one, without going stale for long.
            node.wait_until_succeeds(
                f"STRATA_TOKEN={shlex.quote(granted['token'])} strata-ctl cat {HELLO}", timeout=2 * MAX_STALENESS
            )
            assert fleet_status(node)[0] == 0, fleet_status(node)
        ctl(node3, f"revoke {granted['cap_id']}")
        acked = time.monotonic()
        for node in NODES.values():
            until_refused(node, granted["token"], budget_ms=10000)
        print(f"with one member down: refused on the three nodes within {(time.monotonic() - acked) * 1000:.0f} ms")
        leader.succeed("systemctl start etcd.service")
        node1.wait_until_succeeds("etcdctl endpoint health --cluster", timeout=60)

    with subtest("node3 partitioned: fleet tokens refused with code 6 after maxStaleness, node-local ones served"):
        kept = issue(node1)
        revoked_meanwhile = issue(node1)
        revoked_by_node3 = issue(node3)
        local3 = issue(node3, fleet=False)
        for t in [kept, revoked_meanwhile, revoked_by_node3, local3]:
            assert ctl(node3, f"cat {HELLO}", token=t["token"]) == "hello"
        assert fleet_status(node3)[0] == 0

        node3.block()
        cut = time.monotonic()
        node3.wait_until_succeeds(
            f"STRATA_TOKEN={shlex.quote(kept['token'])} strata-ctl cat {HELLO}; [ $? -eq 16 ]",
            timeout=MAX_STALENESS + 30,
        )
        closed_s = time.monotonic() - cut
        print(f"node3 refuses fleet tokens {closed_s:.1f} s after the cut (maxStaleness {MAX_STALENESS} s)")
        assert closed_s <= MAX_STALENESS + 5, closed_s
        message = ctl(node3, f"cat {HELLO}", token=kept["token"], expect=16)
        assert "fleet" in message, message
        rc, status = fleet_status(node3)
        assert rc == 3 and status["state"] == "stale", status
        assert status["since_heard_ms"] is None or status["since_heard_ms"] >= MAX_STALENESS * 1000, status
        assert json.loads(ctl(node3, "status"))["fleet"]["state"] == "stale"
        # Its own node-local tokens do not depend on etcd.
        assert ctl(node3, f"cat {HELLO}", token=local3["token"]) == "hello"
        # The rest of the fleet is unaffected (node1 and node2 are a quorum).
        for node in [node1, node2]:
            assert fleet_status(node)[0] == 0, fleet_status(node)
            assert ctl(node, f"cat {HELLO}", token=kept["token"]) == "hello"

    with subtest("revocations during the partition: node1's is acknowledged, node3's answers code 6"):
        ctl(node1, f"revoke {revoked_meanwhile['cap_id']}")
        for node in [node1, node2]:
            until_refused(node, revoked_meanwhile["token"], budget_ms=10000)
        # node3 cannot reach a quorum: code 6 (exit 16), in force locally,
        # and identity keeps retrying to commit it.
        message = ctl(node3, f"revoke {revoked_by_node3['cap_id']}", expect=16)
        print(f"node3's revocation during the partition: {message}")
        # Not in etcd yet, so the rest of the fleet cannot know of it.
        assert ctl(node1, f"cat {HELLO}", token=revoked_by_node3["token"]) == "hello"

    with subtest("healed: node3 enforces the revocation it missed before it serves fleet tokens again"):
        node3.unblock()
        healed = time.monotonic()
        # Never served on node3 from the heal on: stale (code 6) until it
        # has caught up, then revoked (code 2).
        until_refused(node3, revoked_meanwhile["token"], budget_ms=60000, never_served=True)
        node3.wait_until_succeeds(
            f"STRATA_TOKEN={shlex.quote(kept['token'])} strata-ctl cat {HELLO}", timeout=60
        )
        print(f"node3 serves fleet tokens again {time.monotonic() - healed:.1f} s after the heal")
        rc, status = fleet_status(node3)
        assert rc == 0 and status["state"] == "fresh", status
        ctl(node3, f"cat {HELLO}", token=revoked_meanwhile["token"], expect=12)

    with subtest("healed: node3's own revocation reaches etcd and the other nodes"):
        node1.wait_until_succeeds(
            f"etcdctl get --print-value-only /strata/{FLEET}/revoked/{revoked_by_node3['cap_id']} | grep -q .",
            timeout=60,
        )
        for node in NODES.values():
            until_refused(node, revoked_by_node3["token"], budget_ms=10000)

    with subtest("etcd members restarted one by one, identity and fs restarted: nothing acknowledged is lost"):
        for node in NODES.values():
            node.succeed("systemctl restart etcd.service")
            node1.wait_until_succeeds("etcdctl endpoint health --cluster", timeout=60)
        node2.succeed("systemctl restart strata-identity.service strata-fs.service")
        for node in NODES.values():
            node.wait_until_succeeds("strata-ctl fleet status", timeout=30)
            for t in [revoked_meanwhile, revoked_by_node3]:
                ctl(node, f"cat {HELLO}", token=t["token"], expect=12)
            assert ctl(node, f"cat {HELLO}", token=kept["token"]) == "hello"
        # node2's identity published its key again: its tokens still serve.
        from_node2 = issue(node2)["token"]
        for node in NODES.values():
            node.wait_until_succeeds(
                f"STRATA_TOKEN={shlex.quote(from_node2)} strata-ctl cat {HELLO}", timeout=2 * MAX_STALENESS
            )
  '';
}
