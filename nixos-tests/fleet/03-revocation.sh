#!/usr/bin/env bash
# A revocation done on node-3 is refused on node-1 and node-2, and how fast:
# FLEET_REVOCATIONS (30) fleet tokens issued on node-1; for each, pollers on
# node-1 and node-2 ask fs.stat every few ms (poll.sh) until refused, while
# node-3's `strata-ctl revoke` runs. Latency: from revoke's return (the
# acknowledgement) to the first refusal on each node. Median and p99 are
# printed; p99 must be under 1 s (issue 15). The revocation itself must be
# in etcd, leased (so that it goes once the token has expired), and
# refused by node-3's own fs too.
. "$(dirname "$0")/lib.sh"

COUNT=${FLEET_REVOCATIONS:-30}
wait_fleet_fresh 1 2 3
: >"$WORK/lat-1"
: >"$WORK/lat-2"
for k in $(seq 1 "$COUNT"); do
    I=$(fleet_token 1 600) || fail "issue on node-1: $I"
    tok=$(jget "$I" .token)
    cap=$(jget "$I" .cap_id)
    poll_start "p1-$k" 1 "$tok" 0 12 5000
    poll_start "p2-$k" 2 "$tok" 0 12 5000
    poll_wait_first "p1-$k"
    poll_wait_first "p2-$k"
    revoke_timed 3 "$cap"
    acked=$ACK_MS
    [ "$(jget "$OUT" .status)" = revoked ] || fail "revoke on node-3: $OUT"
    poll_result "p1-$k"
    [ "$(poll_answer | jq -r .error.code)" = 2 ] || fail "node-1 refused the revoked token, but not with code 2: $POLL_LINE"
    echo $((POLL_AT - acked)) >>"$WORK/lat-1"
    poll_result "p2-$k"
    [ "$(poll_answer | jq -r .error.code)" = 2 ] || fail "node-2 refused the revoked token, but not with code 2: $POLL_LINE"
    echo $((POLL_AT - acked)) >>"$WORK/lat-2"
    if [ "$k" = 1 ]; then
        # In etcd, with a lease that outlives the token.
        ok etcdctl_on 2 get "/strata/$FLEET_NAME/revoked/$cap" -w json
        kv=$(printf '%s' "$OUT" | jq -c '.kvs[0] // empty')
        [ -n "$kv" ] || fail "no /strata/$FLEET_NAME/revoked/$cap in etcd after the acknowledgement"
        value=$(printf '%s' "$kv" | jq -r '.value | @base64d')
        # An administrator's revocation by id does not know the token's
        # expiry: it is kept until the latest one possible (docs/fleet.md),
        # never less than the token's.
        [ "$(jget "$value" .cap_id)" = "$cap" ] && [ "$(jget "$value" .exp)" -ge "$(jget "$I" .expires)" ] ||
            fail "revocation record $value for token $I"
        # Lease ids use all 63 bits: jq would round them (doubles), so
        # take the digits from the text.
        lease=$(printf '%s' "$OUT" | grep -o '"lease":[0-9]*' | head -n 1 | cut -d: -f2)
        [ -n "$lease" ] && [ "$lease" != 0 ] || fail "the revocation record has no lease: $OUT"
        ok etcdctl_on 2 lease timetolive "$(printf '%x' "$lease")"
        ttl=$(printf '%s' "$OUT" | sed -n 's/.*remaining(\(-\{0,1\}[0-9]*\)s).*/\1/p')
        [ -n "$ttl" ] && [ "$ttl" -ge 590 ] || fail "the revocation's lease ends before its token (expires in 600 s): $OUT"
        expect_rc 12 stat_on 3 "$tok"
        log "revocation record in etcd: $value, lease $lease (${ttl} s left)"
    fi
done
cat "$WORK/lat-1" "$WORK/lat-2" >"$WORK/lat-all"
all=$(percentiles "$WORK/lat-all")
n1=$(percentiles "$WORK/lat-1")
n2=$(percentiles "$WORK/lat-2")
figure revocation_propagation_ms "$(jq -cn --argjson a "$all" --argjson n1 "$n1" --argjson n2 "$n2" \
    '$a + {"node-1": $n1, "node-2": $n2, revoked_on: "node-3"}')"
p99=$(jget "$all" .p99)
[ "$p99" -lt 1000 ] || fail "revocation propagation p99 is $p99 ms, want < 1000 ms: $all"
log "$COUNT revocations on node-3: refused on node-1 and node-2, median $(jget "$all" .median) ms, p99 $p99 ms"
pass
