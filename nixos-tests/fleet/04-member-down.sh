#!/usr/bin/env bash
# One etcd member down out of three (node-3's): everything keeps working.
# A fleet token issued on node-1 is served on node-2 and node-3 (whose fs
# and identity now reach the cluster through the other members), revoked on
# node-2, and refused within 1 s on node-1 and node-3; node-3 issues and
# revokes too. Every node's fleet state stays fresh. The member comes back
# and has the revocations.
. "$(dirname "$0")/lib.sh"

wait_fleet_fresh 1 2 3
restarted=0
cleanup() {
    [ "$restarted" = 1 ] || etcd_start 3 || true
    cleanup_work
}
trap cleanup EXIT
etcd_stop 3
stopped=$(now_ms)
wait_until 10 "the cluster to be writable without node-3's member" \
    etcdctl_on 1 put /fleet-test/member-down yes
log "node-3's etcd stopped"

I=$(fleet_token 1) || fail "issue on node-1 with node-3's member down: $I"
tok=$(jget "$I" .token)
cap=$(jget "$I" .cap_id)
for n in 1 2 3; do ok stat_on "$n" "$tok"; done
poll_start down-1 1 "$tok" 0 12 5000
poll_start down-3 3 "$tok" 0 12 5000
poll_wait_first down-1
poll_wait_first down-3
revoke_timed 2 "$cap"
acked=$ACK_MS
poll_result down-1
lat1=$((POLL_AT - acked))
poll_result down-3
lat3=$((POLL_AT - acked))
[ "$lat1" -lt 1000 ] && [ "$lat3" -lt 1000 ] ||
    fail "with one member down, the revocation took $lat1 ms (node-1) and $lat3 ms (node-3), want < 1000"
log "revoked on node-2: refused after $lat1 ms on node-1, $lat3 ms on node-3"

# node-3, whose own member is down, issues and revokes.
I3=$(fleet_token 3) || fail "issue on node-3 with its own member down: $I3"
t3=$(jget "$I3" .token)
ok stat_on 1 "$t3"
ok ctl 3 revoke "$(jget "$I3" .cap_id)"
refused_on_1() { run stat_on 1 "$t3"; [ "$RC" = 12 ]; }
wait_until 2 "node-1 to refuse the token node-3 revoked" refused_on_1
for n in 1 2 3; do
    run ctl "$n" fleet status
    [ "$RC" = 0 ] && [ "$(jget "$OUT" .state)" = fresh ] ||
        fail "node-$n's fleet state with one member down ($(($(now_ms) - stopped)) ms): exit $RC $OUT $ERR"
done
log "node-3 (own member down) issued and revoked; every node fresh"

etcd_start 3
restarted=1
wait_until 30 "the whole cluster healthy again" cluster_healthy 1
ok etcdctl_on 3 get --print-value-only "/strata/$FLEET_NAME/revoked/$cap"
[ "$(jget "$OUT" .cap_id)" = "$cap" ] || fail "node-3's member, back, lacks the revocation of $cap: $OUT"
ok etcdctl_on 1 del /fleet-test/member-down
wait_fleet_fresh 1 2 3
pass
