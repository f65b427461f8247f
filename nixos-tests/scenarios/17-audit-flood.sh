#!/usr/bin/env bash
# A flood, then one denial: every decision is in fs's audit trail
# (/var/log/strata/fs, docs/audit.md), with exact counts, and journald gets
# only refusals. Under STRATA_FLOOD_CONNS (8) clients for
# STRATA_FLOOD_DURATION (3) s of allowed requests on one token, plus
# STRATA_FLOOD_REFUSALS (300) refusals from one unprivileged user over 16
# connections (past its burst each answer waits for its summary):
#  - every allowed request strata-loadgen counted is a record of the trail,
#    method by method (fs.read: a record of its own, or counted in the
#    `reads` of the record that ends its handle), and none is a journald
#    entry;
#  - the refusal flood is records one by one up to the per-uid burst, then
#    summary records whose counts make up the rest exactly;
#  - a denial by root right after both is a record of its own, in the trail
#    and in journald;
#  - the trail's hash chain verifies.
. "$(dirname "$0")/lib.sh"
command -v strata-loadgen >/dev/null 2>&1 || fail "strata-loadgen is not in PATH ($PATH)"
command -v journalctl >/dev/null || fail "journalctl is not in PATH"

DURATION=${STRATA_FLOOD_DURATION:-3}
CONNS=${STRATA_FLOOD_CONNS:-8}
REFUSALS=${STRATA_FLOOD_REFUSALS:-300}
TRAIL=/var/log/strata/fs
LOAD=$TD/flood
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

if ! id "$STRATA_TEST_USER" >/dev/null 2>&1; then
    log "creating user $STRATA_TEST_USER"
    useradd --system --no-create-home --shell /bin/sh "$STRATA_TEST_USER"
fi
TUID=$(id -u "$STRATA_TEST_USER")

fresh_start
make_testdata
strata-loadgen make-tree --dir "$LOAD" --files 16 >/dev/null
ISSUED=$(strata-ctl issue --service fs --actions open,read,list --path-prefix "$LOAD" --ttl 600)
CAP_ID=$(jget "$ISSUED" .cap_id)
# Records of this scenario only: those after the trail's head now (fs is
# stopped by fresh_start; earlier scenarios' records stay in the trail).
SEQ0=$(trail_head_seq "$TRAIL")
T0=$(date +%s)
sleep 1

# The allowed flood; every answer checked, none may fail.
STRATA_TOKEN=$(jget "$ISSUED" .token) strata-loadgen mixed --conns "$CONNS" --duration "$DURATION" \
    --dir "$LOAD" --report "$WORK/report.json" >/dev/null 2>"$WORK/stderr" ||
    fail "strata-loadgen mixed failed: $(cat "$WORK/stderr")"
R=$(cat "$WORK/report.json")
for k in wrong errors_total failures_total refusals; do
    [ "$(jget "$R" ".$k")" = 0 ] || fail "$k = $(jget "$R" ".$k"): $(printf '%s' "$R" | jq -c 'del(.failure_times_ms)')"
done
log "allowed flood: $(jget "$R" .ok) requests in $DURATION s: $(printf '%s' "$R" | jq -c .ok_by_method)"

# The refusal flood, by an unprivileged user, without a token.
FLOOD_PREFIX=$TD/refused-$$-$RANDOM/
as_user "$STRATA_TEST_USER" strata-loadgen refusals --count "$REFUSALS" --method fs.stat \
    --prefix "$FLOOD_PREFIX" --bytes 80 --conns 16 >"$WORK/refusals.json" 2>"$WORK/stderr" ||
    fail "strata-loadgen refusals failed: $(cat "$WORK/refusals.json" "$WORK/stderr")"
[ "$(jget "$(cat "$WORK/refusals.json")" .code_2)" = "$REFUSALS" ] ||
    fail "every refusal should get code 2: $(cat "$WORK/refusals.json")"

# One denial by root right after, with a path no other scenario uses.
DENIED_PATH=/etc/strata-flood-$$-$RANDOM
STRATA_TOKEN=$(jget "$ISSUED" .token) expect_rc 13 strata-ctl cat "$DENIED_PATH"

# Counted refusals are summarised at the latest when fs stops.
systemctl stop strata-fs.service
trail_records "$TRAIL" "$SEQ0" >"$WORK/trail.jsonl"
log "trail: $(wc -l <"$WORK/trail.jsonl") records in $(ls "$TRAIL" | tr '\n' ' ')"

# Allowed requests, method by method.
count_of() { jq -s --arg c "$CAP_ID" --arg m "$1" \
    '[.[] | select(.kind == "decision" and .decision == "allow" and .cap_id == $c and .method == $m and .code == null)] | length' \
    "$WORK/trail.jsonl"; }
for m in fs.open fs.list fs.close; do
    want=$(printf '%s' "$R" | jq -r --arg m "$m" '.ok_by_method[$m] // 0')
    got=$(count_of "$m")
    [ "$got" -eq "$want" ] || fail "$m: $want answered ok, but $got allow records in the trail"
done
want=$(printf '%s' "$R" | jq -r '.ok_by_method["fs.read"] // 0')
got=$(jq -s --arg c "$CAP_ID" \
    '[.[] | select(.kind == "decision" and .cap_id == $c) |
      if .method == "fs.read" and .decision == "allow" and .code == null then 1 else (.reads.count // 0) end] | add // 0' \
    "$WORK/trail.jsonl")
[ "$got" -eq "$want" ] || fail "fs.read: $want answered ok, but the trail accounts for $got"
log "every allowed request is in the trail, method by method ($(jget "$R" .ok) in all)"

# The refusal flood: one by one, plus summaries, exactly.
one_by_one=$(jq -s --argjson u "$TUID" --arg p "$FLOOD_PREFIX" \
    '[.[] | select(.kind == "decision" and .uid == $u and ((.path // "") | startswith($p)))] | length' \
    "$WORK/trail.jsonl")
summarised=$(jq -s --argjson u "$TUID" '[.[] | select(.kind == "summary" and .uid == $u) | .count] | add // 0' \
    "$WORK/trail.jsonl")
log "refusal flood: $one_by_one records one by one, $summarised in summaries"
[ $((one_by_one + summarised)) -eq "$REFUSALS" ] ||
    fail "$REFUSALS refusals sent, but $one_by_one recorded and $summarised summarised"
[ "$one_by_one" -lt "$REFUSALS" ] || fail "no refusal was summarised: the per-uid rate does not hold"

# The denial after both floods: its own record, in the trail and journald.
denial=$(jq -c --arg p "$DENIED_PATH" 'select(.kind == "decision" and .path == $p)' "$WORK/trail.jsonl")
[ -n "$denial" ] || fail "no record of the denial of $DENIED_PATH in the trail"
[ "$(jget "$denial" .decision)" = deny ] && [ "$(jget "$denial" .uid)" = 0 ] && [ "$(jget "$denial" .code)" = 3 ] ||
    fail "the denial's record: $denial"
in_journal() {
    journalctl -u strata-fs.service --since "@$T0" -o cat STRATA_DECISION=deny STRATA_PATH="$DENIED_PATH" 2>/dev/null | grep -q .
}
wait_until 30 "the deny entry for $DENIED_PATH in journald" in_journal
allows=$(journalctl -u strata-fs.service --since "@$T0" -o cat STRATA_DECISION=allow 2>/dev/null | wc -l)
[ "$allows" -eq 0 ] || fail "$allows allow entries in journald: allowed requests should go to the trail only"

run strata-ctl audit verify "$TRAIL"
[ "$RC" = 0 ] || fail "strata-ctl audit verify $TRAIL: exit $RC: $OUT $ERR"
log "$(printf '%s\n' "$OUT" | grep '^head:')"
pass
