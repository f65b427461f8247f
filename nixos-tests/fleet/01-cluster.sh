#!/usr/bin/env bash
# The test bed itself, before anything of Strata's fleet: three members in
# one healthy etcd cluster on the bridge, writes on one node read on the
# others, Strata's single-node units up on every node; a partitioned node's
# member loses its health (and the others stay writable), heals and catches
# up; one member stopped leaves the cluster writable. Later scenarios rely
# on exactly these mechanics (partition, heal, etcd_stop, etcd_start).
. "$(dirname "$0")/lib.sh"

# Three members, each healthy, seen from every node.
for n in $(seq 1 "$NODES"); do
    ok etcdctl_on "$n" member list -w json
    count=$(printf '%s' "$OUT" | jq '.members | length')
    [ "$count" = 3 ] || fail "node-$n sees $count etcd members, want 3: $OUT"
    ok etcdctl_on "$n" endpoint health --cluster
    [ "$(printf '%s\n%s' "$OUT" "$ERR" | grep -c 'is healthy')" = 3 ] ||
        fail "node-$n: not every member healthy: $OUT $ERR"
done
ok etcdctl_on 1 put /fleet-test/hello from-node-1
ok etcdctl_on 3 get --print-value-only /fleet-test/hello
[ "$OUT" = from-node-1 ] || fail "node-3 reads '$OUT' for a key node-1 wrote"
# The cluster keeps its revision history small (the fleet's revocations
# rely on leases and compaction, not on an unbounded log).
ok on_node 2 cat /etc/default/etcd
printf '%s' "$OUT" | grep -q '^ETCD_AUTO_COMPACTION_MODE=periodic$' || fail "no periodic auto-compaction on node-2: $OUT"
log "etcd: 3 members, healthy, replicating"

# Strata's units on every node (the fleet configuration installed by the
# runner must not keep them from starting).
for n in $(seq 1 "$NODES"); do
    for u in strata-identity.service strata-fs.service strata-supervisor.service; do
        ok on_node "$n" systemctl is-active "$u"
    done
    ok ctl "$n" health fs
    [ "$(jget "$OUT" .status)" = ok ] || fail "node-$n: fs health: $OUT"
    t=$(jget "$(ctl "$n" issue --service fs --actions stat --path-prefix "$FLEET_TD" --ttl 60)" .token)
    ok stat_on "$n" "$t"
    # Only its own node was asked for: the fs it was issued for serves it.
done
log "strata: identity, fs and supervisor up on every node; a node-local token is served"

# The fleet configuration reaches both services: fleet.env in their
# environment, the host's network namespace (PrivateNetwork=no), and the
# address filter lets them reach etcd on the bridge.
for n in $(seq 1 "$NODES"); do
    for u in strata-identity strata-fs; do
        pid=$(on_node "$n" systemctl show -p MainPID --value "$u.service")
        [ "$pid" -gt 0 ] || fail "node-$n: $u has no main process"
        envs=$(on_node "$n" cat "/proc/$pid/environ" | tr '\0' '\n')
        printf '%s\n' "$envs" | grep -qx "STRATA_FLEET_NAME=$FLEET_NAME" &&
            printf '%s\n' "$envs" | grep -qx "STRATA_NODE_ID=node-$n" &&
            printf '%s\n' "$envs" | grep -q '^STRATA_FLEET_ETCD_ENDPOINTS=http://' ||
            fail "node-$n: $u runs without the fleet's environment: $envs"
        [ "$(on_node "$n" readlink "/proc/$pid/ns/net")" = "$(on_node "$n" readlink /proc/1/ns/net)" ] ||
            fail "node-$n: $u is not in the node's network namespace (PrivateNetwork=no missing)"
    done
    # identity reads its endorsement as its own (dynamic) user.
    pid=$(on_node "$n" systemctl show -p MainPID --value strata-identity.service)
    file=$(on_node "$n" cat "/proc/$pid/environ" | tr '\0' '\n' | sed -n 's/^STRATA_FLEET_ENDORSEMENT_FILE=//p')
    [ -n "$file" ] || fail "node-$n: identity has no STRATA_FLEET_ENDORSEMENT_FILE"
    ok on_node "$n" nsenter -t "$pid" -m -S "$(on_node "$n" stat -c %u "/proc/$pid")" cat "$file"
    ok "$FLEET_CTL" fleet verify --root-public-key "$(jq -r .public_key "$FLEET_ROOT_KEY")" --fleet "$FLEET_NAME" - <<<"$OUT"
    [ "$(jget "$OUT" .node_id)" = "node-$n" ] || fail "node-$n's endorsement names $(jget "$OUT" .node_id)"
done
# The units' IPAddressDeny=any with the runner's IPAddressAllow=: etcd on
# the bridge is reachable from a unit so confined.
ok on_node 1 systemd-run --wait --pipe --quiet -p IPAddressDeny=any \
    -p "IPAddressAllow=${IPS[1]%.*}.0/24 127.0.0.0/8" -p RestrictAddressFamilies="AF_UNIX AF_INET AF_INET6" \
    etcdctl --endpoints="http://${IPS[1]}:2379" --dial-timeout=2s endpoint health
run on_node 1 systemd-run --wait --pipe --quiet -p IPAddressDeny=any \
    etcdctl --endpoints="http://${IPS[1]}:2379" --dial-timeout=2s endpoint health
if [ "$RC" = 0 ]; then
    log "note: IPAddressDeny= is not enforced in these containers (no BPF firewall for their systemd)"
else
    log "IPAddressDeny=any is enforced here: without the allow list etcd is unreachable"
fi
log "fleet configuration: environment, network namespace and endorsement in place on every node"

# A partition: node-3's member loses its leader (unhealthy), the other two
# keep a quorum and stay writable; node-3 reads nothing new meanwhile.
partition 3
t0=$(now_ms)
wait_until 15 "node-3's etcd to report unhealthy while partitioned" etcd_unhealthy 3
log "partitioned node-3's etcd unhealthy after $(($(now_ms) - t0)) ms"
ok etcdctl_on 1 put /fleet-test/during-partition written-by-node-1
ok etcdctl_on 2 get --print-value-only /fleet-test/during-partition
[ "$OUT" = written-by-node-1 ] || fail "node-2 reads '$OUT' during the partition"
etcd_healthy 1 || fail "node-1's member unhealthy while only node-3 is cut off"
run etcdctl_on 3 get --print-value-only /fleet-test/during-partition
[ "$RC" != 0 ] || [ -z "$OUT" ] || fail "partitioned node-3 read a key written during the partition: $OUT"
heal 3
t0=$(now_ms)
wait_until 30 "node-3's etcd to be healthy after healing" etcd_healthy 3
log "healed node-3's etcd healthy after $(($(now_ms) - t0)) ms"
ok etcdctl_on 3 get --print-value-only /fleet-test/during-partition
[ "$OUT" = written-by-node-1 ] || fail "healed node-3 reads '$OUT' for the key written during the partition"

# One member stopped: the other two keep the cluster writable.
etcd_stop 2
ok etcdctl_on 1 put /fleet-test/member-down still-writable
ok etcdctl_on 3 get --print-value-only /fleet-test/member-down
[ "$OUT" = still-writable ] || fail "node-3 reads '$OUT' with node-2's member down"
etcd_start 2
wait_until 30 "node-2's etcd healthy after its start" etcd_healthy 2
ok etcdctl_on 2 get --print-value-only /fleet-test/member-down
[ "$OUT" = still-writable ] || fail "restarted node-2 reads '$OUT'"
wait_until 30 "the whole cluster healthy again" cluster_healthy 1
ok etcdctl_on 1 del --prefix /fleet-test/
log "partition and heal of node-3, member node-2 stopped and started: cluster writable throughout"
pass
