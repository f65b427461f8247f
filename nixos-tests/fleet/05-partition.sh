#!/usr/bin/env bash
# node-3 cut off (its bridge port leaves the bridge), then healed:
#  - it keeps serving its node-local tokens;
#  - it refuses fleet tokens with code 6 and a message naming the fleet once
#    it has not heard from etcd for maxStaleness, within maxStaleness + 1 s
#    of the cut (figure: time to fail closed);
#  - `strata-ctl fleet status` exits 3 with state stale, and
#    `strata-ctl status` shows the same;
#  - a revocation made on node-1 during the partition is enforced on node-3
#    after healing: its token goes from code 6 to code 2, never served;
#  - fleet tokens are served again (figure: time to recover).
. "$(dirname "$0")/lib.sh"

wait_fleet_fresh 1 2 3
T1=$(jget "$(fleet_token 1)" .token)
I2=$(fleet_token 1) || fail "issue on node-1: $I2"
T2=$(jget "$I2" .token)
cap2=$(jget "$I2" .cap_id)
L3=$(jget "$(local_token 3)" .token)
for t in "$T1" "$T2" "$L3"; do ok stat_on 3 "$t"; done

healed=0
cleanup() {
    [ "$healed" = 1 ] || heal 3 || true
    cleanup_work
}
trap cleanup EXIT

budget=$((FLEET_MAX_STALENESS * 1000 + 1000))
poll_start closed 3 "$T1" 0 16 $((budget + 5000))
poll_wait_first closed
partition 3
cut=$(now_ms)
poll_result closed
fail_closed=$((POLL_AT - cut))
answer=$(poll_answer)
[ "$(printf '%s' "$answer" | jq -r .error.code)" = 6 ] || fail "node-3 refused a fleet token, but not with code 6: $answer"
printf '%s' "$answer" | jq -r .error.message | grep -qi fleet || fail "code 6 without a word of the fleet: $answer"
[ "$fail_closed" -le "$budget" ] ||
    fail "node-3 failed closed $fail_closed ms after the cut, want <= ${budget} ms (maxStaleness ${FLEET_MAX_STALENESS} s + 1 s)"
log "partitioned node-3 fails closed after $fail_closed ms: $(printf '%s' "$answer" | jq -r .error.message)"

ok stat_on 3 "$L3"
expect_rc 16 stat_on 3 "$T2"
run ctl 3 fleet status
[ "$RC" = 3 ] && [ "$(jget "$OUT" .state)" = stale ] || fail "fleet status on partitioned node-3: exit $RC (want 3), $OUT $ERR"
[ "$(jget "$OUT" .since_heard_ms)" -ge $((FLEET_MAX_STALENESS * 1000)) ] || fail "stale, yet heard from etcd recently: $OUT"
run ctl 3 status
st=$(fleet_of "$OUT")
[ -n "$st" ] && [ "$(jget "$st" .state)" = stale ] || fail "strata-ctl status on node-3 does not show the stale fleet: $OUT"
log "node-local token served; fleet status: $(ctl 3 fleet status || true)"

# A revocation on node-1 while node-3 cannot hear it.
ok ctl 1 revoke "$cap2"
refused() { run stat_on "$1" "$2"; [ "$RC" = 12 ]; }
wait_until 2 "node-1 to refuse the token revoked during the partition" refused 1 "$T2"
wait_until 2 "node-2 to refuse the token revoked during the partition" refused 2 "$T2"
sleep 1

# Heal: T1 goes from code 6 to served; T2 from code 6 to code 2, never
# served in between (the catch-up comes before fleet tokens are served).
poll_start recover 3 "$T1" 16 0 30000
poll_start revoked 3 "$T2" 16 12 30000
poll_wait_first recover
poll_wait_first revoked
heal 3
healed=1
t_heal=$(now_ms)
poll_result recover
recover=$((POLL_AT - t_heal))
poll_result revoked
caught_up=$((POLL_AT - t_heal))
expect_rc 12 stat_on 3 "$T2"
ok stat_on 3 "$T1"
wait_fleet_fresh 3
log "healed: node-3 serves fleet tokens again after $recover ms; the revocation made meanwhile enforced after $caught_up ms"
figure partition_ms "$(jq -cn --argjson c "$fail_closed" --argjson r "$recover" --argjson u "$caught_up" \
    --argjson s "$FLEET_MAX_STALENESS" '{max_staleness_s: $s, fail_closed: $c, recover: $r, missed_revocation_enforced: $u}')"
pass
