#!/usr/bin/env bash
# One trust root across nodes (docs/fleet.md):
#  - every identity has published its key and endorsement under
#    /strata/F/keys/<node id>, and each endorsement verifies with the root;
#  - a fleet token (aud fleet:F) issued on node-1 is served by node-2's and
#    node-3's fs;
#  - a node-local token of node-1 is refused on node-2 (code 2);
#  - a key put in etcd by hand, endorsed by another root, is ignored and
#    node-2's fs logs "not endorsed" naming its etcd key;
#  - figure: fs throughput and latency on node-2 with a fleet token of
#    node-1 against a node-local token of node-2 (strata-loadgen mixed).
. "$(dirname "$0")/lib.sh"

wait_fleet_fresh 1 2 3
KEYS=/strata/$FLEET_NAME/keys/
ROOT_PUB=$(jq -r .public_key "$FLEET_ROOT_KEY")

# ------------------------------------------------------ published keys ----
ok etcdctl_on 2 get --prefix "$KEYS" -w json
published=$(printf '%s' "$OUT" | jq -c '[.kvs[]? | {key: (.key | @base64d), value: (.value | @base64d | fromjson)}]')
[ "$(printf '%s' "$published" | jq length)" = "$NODES" ] ||
    fail "want $NODES keys under $KEYS, got: $published"
for n in $(seq 1 "$NODES"); do
    entry=$(printf '%s' "$published" | jq -c --arg k "${KEYS}node-$n" '.[] | select(.key == $k) | .value')
    [ -n "$entry" ] || fail "no ${KEYS}node-$n in etcd: $published"
    [ "$(jget "$entry" .node_id)" = "node-$n" ] || fail "${KEYS}node-$n names another node: $entry"
    pub=$(jget "$(ctl "$n" identity.pubkey)" .result.public_key)
    [ "$(jget "$entry" .public_key)" = "$pub" ] || fail "${KEYS}node-$n holds another key than node-$n's identity ($pub): $entry"
    run "$FLEET_CTL" fleet verify --root-public-key "$ROOT_PUB" --fleet "$FLEET_NAME" - <<<"$(jget "$entry" .endorsement)"
    [ "$RC" = 0 ] || fail "node-$n's published endorsement does not verify: $OUT $ERR"
    [ "$(jget "$OUT" .node_id)" = "node-$n" ] && [ "$(jget "$OUT" .public_key)" = "$pub" ] &&
        [ "$(jget "$OUT" .kid)" = "$(jget "$entry" .kid)" ] || fail "endorsement of node-$n: $OUT vs $entry"
done
run ctl 2 fleet status
[ "$RC" = 0 ] || fail "fleet status on node-2 exits $RC: $OUT $ERR"
[ "$(printf '%s' "$OUT" | jq -c '.nodes | sort')" = '["node-1","node-2","node-3"]' ] &&
    [ "$(jget "$OUT" .name)" = "$FLEET_NAME" ] || fail "fleet status on node-2: $OUT"
log "keys of node-1..3 published with endorsements that verify; node-2 knows all three"

# ------------------------------------------------------ cross-node use ----
I=$(fleet_token 1) || fail "issue --aud $AUD on node-1 failed: $I"
tok=$(jget "$I" .token)
ok ctl_tok 1 "$tok" whoami
printf '%s' "$OUT" | jq -e --arg a "$AUD" '(.aud | if type == "array" then . else [.] end) | index($a) != null' >/dev/null ||
    fail "a token issued with --aud $AUD does not carry it: $OUT"
for n in 1 2 3; do
    ok stat_on "$n" "$tok"
    [ "$(jget "$OUT" .result.size)" = 12 ] || fail "fs.stat on node-$n with node-1's fleet token: $OUT"
done
ok ctl_tok 2 "$tok" cat "$FLEET_TD/hello.txt"
[ "$OUT" = "hello fleet" ] || fail "cat on node-2 with node-1's fleet token gave '$OUT'"
log "a fleet token of node-1 is served by the fs of node-1, node-2 and node-3"

# ---------------------------------------------------- node-local tokens ----
L=$(jget "$(local_token 1)" .token)
ok stat_on 1 "$L"
expect_rc 12 stat_on 2 "$L"
[ "$(jget "$OUT" .error.code)" = 2 ] || fail "node-1's node-local token on node-2: $OUT"
expect_rc 12 stat_on 3 "$L"
log "a node-local token of node-1 is refused on node-2 and node-3 (code 2): $(jget "$OUT" .error.message)"

# ------------------------------------------------------ a rogue key -------
# A real key pair and a well-formed endorsement, signed by another root:
# what someone with write access to etcd, but not the root key, can make.
"$FLEET_CTL" fleet init --out "$WORK/rogue-root.json" --fleet "$FLEET_NAME" >/dev/null 2>&1 || fail "fleet init (rogue root)"
R2=$("$FLEET_CTL" fleet init --out "$WORK/rogue-node.json" --fleet "$FLEET_NAME" 2>/dev/null) || fail "fleet init (rogue node key)"
rogue_pub=$(jget "$R2" .public_key)
"$FLEET_CTL" fleet endorse --root-key "$WORK/rogue-root.json" --node-id rogue --node-key "$rogue_pub" \
    >"$WORK/rogue.endorsement" || fail "fleet endorse (rogue)"
V=$("$FLEET_CTL" fleet verify --root-public-key "$(jq -r .public_key "$WORK/rogue-root.json")" \
    --fleet "$FLEET_NAME" "$WORK/rogue.endorsement") || fail "the rogue endorsement does not even verify with its own root"
rogue_value=$(jq -cn --arg pk "$rogue_pub" --arg kid "$(jget "$V" .kid)" --arg e "$(cat "$WORK/rogue.endorsement")" \
    '{node_id: "rogue", kid: $kid, public_key: $pk, endorsement: $e}')
cursor=$(on_node 2 journalctl -n0 --show-cursor --no-pager | sed -n 's/^-- cursor: //p')
ok etcdctl_on 1 put "${KEYS}rogue" "$rogue_value"
rogue_logged() {
    on_node 2 journalctl --no-pager -u strata-fs.service --after-cursor="$cursor" |
        grep 'not endorsed' | grep -q "${KEYS}rogue"
}
wait_until 10 "node-2's strata-fs to log 'not endorsed' for ${KEYS}rogue" rogue_logged
log "node-2's fs: $(on_node 2 journalctl --no-pager -u strata-fs.service --after-cursor="$cursor" | grep 'not endorsed' | tail -n 1)"
run ctl 2 fleet status
printf '%s' "$OUT" | jq -e '.nodes | index("rogue") == null' >/dev/null || fail "node-2 counts the rogue key as a node: $OUT"
[ "$(jget "$OUT" .state)" = fresh ] || fail "a rogue key made node-2's fleet state $(jget "$OUT" .state)"
ok stat_on 2 "$tok"
ok etcdctl_on 1 del "${KEYS}rogue"
log "a key endorsed by another root is ignored and logged"

# -------------------------------------------- verification cost figure ----
# The same closed-loop load (4 connections, 3 s, fs.read/list checked
# against the files) on node-2's fs, once with a fleet token signed by
# node-1's key (found through etcd), once with node-2's own node-local
# token. Both tokens are verified once and cached after that, as in
# production; the figure is what a fleet token costs per request.
ok on_node 2 strata-loadgen make-tree --dir "$FLEET_TD/tree" --files 24
ok on_node 2 chmod -R a+rX "$FLEET_TD/tree"
F=$(jget "$(fleet_token 1)" .token)
N=$(jget "$(local_token 2)" .token)
load() {
    run on_node 2 env STRATA_TOKEN="$2" strata-loadgen mixed --conns 4 --duration 3 --dir "$FLEET_TD/tree"
    [ "$RC" = 0 ] || fail "loadgen mixed with the $1 token: exit $RC: $OUT $ERR"
    [ "$(jget "$OUT" .wrong)" = 0 ] && [ "$(jget "$OUT" .errors_total)" = 0 ] &&
        [ "$(jget "$OUT" .ok)" -gt 0 ] || fail "loadgen mixed with the $1 token: $OUT"
    printf '%s' "$OUT" | jq -c '{ok_per_s, p50_ms: .latency_ms.p50, p99_ms: .latency_ms.p99}'
}
# Three pairs, alternating, and the median of each kind: these 2-core
# machines are noisy, and a pair run side by side shares the noise.
runs_local=()
runs_fleet=()
for _ in 1 2 3; do
    runs_local+=("$(load node-local "$N")")
    runs_fleet+=("$(load fleet "$F")")
done
cost=$(jq -cn --slurpfile l <(printf '%s\n' "${runs_local[@]}") --slurpfile f <(printf '%s\n' "${runs_fleet[@]}") '
    def median(k): map(k) | sort | .[length / 2 | floor];
    def summary: {ok_per_s: median(.ok_per_s), p50_ms: median(.p50_ms), p99_ms: median(.p99_ms)};
    {node_local: ($l | summary), fleet: ($f | summary), runs: {node_local: $l, fleet: $f}}
    | .fleet_over_local_throughput = ((.fleet.ok_per_s / .node_local.ok_per_s * 1000 | round) / 1000)')
figure verification_cost "$cost"
pass
