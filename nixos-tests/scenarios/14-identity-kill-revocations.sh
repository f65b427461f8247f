#!/usr/bin/env bash
# Kill identity during a revocation storm: STRATA_STORM_COUNT (4000) tokens
# are revoked from STRATA_STORM_CONNS (16) connections at once while
# `systemctl kill -s KILL strata-identity.service` runs STRATA_STORM_KILLS
# (2) times, 1 s apart. After identity is back:
#  - every revocation identity acknowledged is in force: identity.verify
#    says revoked, fs refuses the token (code 2);
#  - the state and key files are intact: revocations.json parses and lists
#    every acknowledged cap_id, signing.key is byte for byte the same;
#  - tokens issued before the kill (20 controls, plus one read through
#    strata-ctl) still verify and are served.
. "$(dirname "$0")/lib.sh"
command -v strata-loadgen >/dev/null 2>&1 || fail "strata-loadgen is not in PATH ($PATH)"
command -v sha256sum >/dev/null 2>&1 || fail "sha256sum is not in PATH"

COUNT=${STRATA_STORM_COUNT:-4000}
CONNS=${STRATA_STORM_CONNS:-16}
KILLS=${STRATA_STORM_KILLS:-2}
# identity's StateDirectory=strata/identity: with DynamicUser= it lives in
# /var/lib/private and systemd keeps this path a symlink to it.
STATE=/var/lib/strata/identity
WORK=$(mktemp -d)
storm=""
cleanup() {
    [ -z "$storm" ] || kill "$storm" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

fresh_start
make_testdata
good=$(issue_token open,read,list "$TD" 3600)
ok strata-ctl --token "$good" cat "$TD/hello.txt"
key_file=$(readlink -f "$STATE/signing.key")
[ -f "$key_file" ] || fail "no signing key at $STATE/signing.key"
key_sum=$(sha256sum <"$key_file")
pub=$(jget "$(strata-ctl identity.pubkey)" .result.public_key)
n0=$(prop strata-identity.service NRestarts)

# identity is back: a new process, active.
back() {
    local p
    p=$(prop strata-identity.service MainPID)
    [ "$p" -gt 0 ] && [ "$p" != "$pid" ] && is_state strata-identity.service active
}

log "storm: $COUNT revocations from $CONNS connections; $KILLS x SIGKILL of identity during it"
strata-loadgen revoke-storm --count "$COUNT" --conns "$CONNS" --controls 20 \
    --prefix "$TD" --out "$WORK/storm.json" --ready-file "$WORK/ready" \
    >"$WORK/summary.json" 2>"$WORK/stderr" &
storm=$!
wait_until 120 "the storm to start revoking" test -e "$WORK/ready"
sleep 0.5
for k in $(seq 1 "$KILLS"); do
    pid=$(prop strata-identity.service MainPID)
    t=$(date +%s%3N)
    systemctl kill -s KILL strata-identity.service
    echo "$t $pid" >>"$WORK/kills"
    log "kill $k: identity pid $pid at $t"
    # Back (restarted by systemd, or started by the next connection), then
    # let the storm run on it for a second before the next kill.
    wait_until 30 "identity running again after kill $k" back
    sleep 1
done
set +e
wait "$storm"
src=$?
set -e
storm=""
[ "$src" = 0 ] || fail "revoke-storm exited $src: $(cat "$WORK/stderr")"
S=$(cat "$WORK/summary.json")
log "storm: $(printf '%s' "$S" | jq -c .)"

# The kills landed inside the storm: revocations were acknowledged before
# the first kill and after the last one.
first_kill=$(head -n1 "$WORK/kills" | cut -d' ' -f1)
last_kill=$(tail -n1 "$WORK/kills" | cut -d' ' -f1)
before=$(jq --argjson t "$first_kill" '[.storm[] | select(.status == "acked" and .at_ms < $t)] | length' "$WORK/storm.json")
after=$(jq --argjson t "$last_kill" '[.storm[] | select(.status == "acked" and .at_ms > $t)] | length' "$WORK/storm.json")
log "acknowledged: $before before the first kill, $after after the last"
[ "$before" -gt 0 ] && [ "$after" -gt 0 ] ||
    fail "the kills did not land inside the storm ($before acknowledged before, $after after): raise STRATA_STORM_COUNT"
acked=$(jget "$S" .acked)
lost=$(printf '%s' "$S" | jq -r '.by_status.connection_lost // 0')
refusals=$(jget "$S" .refusals)
[ "$refusals" = 0 ] || fail "$refusals connection attempts to identity were refused (systemd holds its socket)"
restarts=$(($(prop strata-identity.service NRestarts) - n0))

# Files: the key unchanged, the revocation list whole.
[ "$(sha256sum <"$key_file")" = "$key_sum" ] || fail "signing.key changed across the kills"
[ "$(jget "$(strata-ctl identity.pubkey)" .result.public_key)" = "$pub" ] || fail "identity's public key changed"
rev_file=$(readlink -f "$STATE/revocations.json")
jq -e '.revocations | type == "array"' "$rev_file" >/dev/null || fail "revocations.json does not parse: $(head -c 300 "$rev_file")"
missing=$(jq -n --slurpfile s "$WORK/storm.json" --slurpfile r "$rev_file" \
    '($r[0].revocations | map({(.cap_id): true}) | add // {}) as $have
     | [$s[0].storm[] | select(.status == "acked" and ($have[.cap_id] | not))] | length')
[ "$missing" = 0 ] || fail "$missing acknowledged revocations are missing from revocations.json"
entries=$(jq '.revocations | length' "$rev_file")
leftovers=$(find "$(dirname "$rev_file")" -maxdepth 1 -name '.*.tmp-*' | wc -l)
log "revocations.json: $entries entries, $(stat -c %s "$rev_file") bytes, parses; signing.key unchanged; $leftovers temporary file(s) left by the kills"

# Every acknowledged revocation in force, at identity and at fs; the
# controls valid and served.
wait_synced "after the kills"
run strata-loadgen check-revoked --file "$WORK/storm.json"
log "check: $OUT"
[ "$RC" = 0 ] || fail "check-revoked: $OUT $ERR"
ok strata-ctl --token "$good" cat "$TD/hello.txt"
[ "$OUT" = "hello strata" ] || fail "token issued before the kills read '$OUT'"
ok strata-ctl verify "$good"
[ "$(jget "$OUT" .valid)" = true ] || fail "token issued before the kills no longer valid: $OUT"

log "held: $acked of $COUNT revocations acknowledged ($(jget "$S" .acked_per_s)/s) across $KILLS kills ($restarts restarts by systemd), all in force at identity and fs; $lost lost in flight (no promise made); 21 tokens from before the kills valid; key unchanged; 0 refused"
pass
