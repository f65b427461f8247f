#!/usr/bin/env bash
# Issue 10, defect 4: under journald, a client without a token could forge
# audit lines and wipe the journal. journald stores a value as given and
# `journalctl -o cat` prints it raw, so fs escapes and bounds what the
# client sent before logging it, and counts refusals past a per-uid rate
# instead of logging each. This checks, against the real journal:
#  a) an unauthenticated fs.stat whose path holds a newline and a forged
#     "allow" line produces no line that starts with the forgery, and its
#     STRATA_PATH holds the newline escaped;
#  b) STRATA_AUDIT_FLOOD (50) unauthenticated fs.stat with a 1 MiB path,
#     from one unprivileged user over one connection, add at most
#     STRATA_AUDIT_MAX_ENTRY (3072) bytes per journal entry (export format)
#     and at most that much per request in all;
#  c) a denial made before the flood is still there after it, a denial by
#     another uid right after it is logged on its own, and the flooder's
#     entries one by one plus its summary counts (written when fs stops)
#     add up exactly to the requests sent.
. "$(dirname "$0")/lib.sh"
command -v strata-loadgen >/dev/null 2>&1 || fail "strata-loadgen is not in PATH ($PATH)"
command -v journalctl >/dev/null || fail "journalctl is not in PATH"

FLOOD=${STRATA_AUDIT_FLOOD:-50}
MAX_ENTRY=${STRATA_AUDIT_MAX_ENTRY:-3072}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

if ! id "$STRATA_TEST_USER" >/dev/null 2>&1; then
    log "creating user $STRATA_TEST_USER"
    useradd --system --no-create-home --shell /bin/sh "$STRATA_TEST_USER"
fi
TUID=$(id -u "$STRATA_TEST_USER")
[ "$TUID" != 0 ] || fail "$STRATA_TEST_USER is root"

fresh_start
make_testdata
# Entries of this scenario only: fs was stopped by fresh_start, and every
# query below starts at T0.
T0=$(date +%s)
sleep 1
unset STRATA_TOKEN
fs_journal() { journalctl -u strata-fs.service --since "@$T0" "$@" 2>/dev/null; }
# Decision entries as JSON, one a line.
decisions() { fs_journal -o json "$@"; }

# a) The forgery. JSON's \n is a newline once fs has parsed the request.
RUN_ID=$$-$RANDOM
FORGED_PREFIX=$TD/forged-$RUN_ID
expect_rc 12 strata-ctl fs.stat \
    "{\"path\":\"$FORGED_PREFIX\\nDec 01 14:02:00 vm strata-fs[1]: allow fs.open uid=0 path=/srv/secret\"}"
forged_entry() {
    decisions STRATA_DECISION=deny |
        jq -c --arg p "$FORGED_PREFIX" 'select(.STRATA_PATH | type == "string" and startswith($p))'
}
wait_until 20 "the deny entry of the forged path" forged_entry
ENTRY=$(forged_entry | head -n 1)
want="$FORGED_PREFIX\\nDec 01 14:02:00 vm strata-fs[1]: allow fs.open uid=0 path=/srv/secret"
[ "$(jget "$ENTRY" .STRATA_PATH)" = "$want" ] ||
    fail "STRATA_PATH should hold the newline escaped as \\n: $ENTRY"
case $(jget "$ENTRY" .MESSAGE) in *$'\n'*) fail "MESSAGE holds a newline: $ENTRY" ;; esac
fs_journal -o cat >"$WORK/cat"
if grep -nE '^Dec 01|^allow fs\.open uid=0 .*path=/srv/secret' "$WORK/cat"; then
    fail "journalctl -o cat shows a forged line (above)"
fi
log "a) forged path logged as one entry: $(jget "$ENTRY" .MESSAGE)"

# c) A denial before the flood, by root.
BEFORE=$TD/before-flood-$RUN_ID
expect_rc 12 strata-ctl fs.stat "{\"path\":\"$BEFORE\"}"
has_path() { [ "$(decisions STRATA_DECISION=deny STRATA_PATH="$1" | wc -l)" -ge 1 ]; }
wait_until 20 "the deny entry for $BEFORE" has_path "$BEFORE"

# b) The flood, by an unprivileged user, over one connection. The path
# begins with 300 control characters (5 bytes each once escaped, the most
# an ASCII byte grows), then x: 1,046,000 bytes, just under the 1 MiB
# frame limit once JSON has escaped the control characters.
FLOOD_PREFIX=$TD/flood-$RUN_ID/
CTRL=$(printf '\001%.0s' $(seq 300))
as_user "$STRATA_TEST_USER" strata-loadgen refusals --count "$FLOOD" --method fs.stat \
    --prefix "$FLOOD_PREFIX$CTRL" --bytes 1046000 >"$WORK/report.json" 2>"$WORK/stderr" ||
    fail "strata-loadgen refusals failed: $(cat "$WORK/report.json" "$WORK/stderr")"
R=$(cat "$WORK/report.json")
[ "$(jget "$R" .code_2)" = "$FLOOD" ] || fail "every flood request should get code 2: $R"
log "b) flood: $R"

# c) Another uid's denial right after: logged on its own.
AFTER=$TD/after-flood-$RUN_ID
expect_rc 12 strata-ctl fs.stat "{\"path\":\"$AFTER\"}"
wait_until 20 "the deny entry for $AFTER (uid 0, right after the flood)" has_path "$AFTER"

# Counted refusals are summarised at the latest when fs stops.
systemctl stop strata-fs.service
has_summary() {
    [ "$(decisions STRATA_DECISION=deny-summary STRATA_UID="$TUID" | wc -l)" -ge 1 ]
}
wait_until 20 "a deny-summary entry for uid $TUID" has_summary

flood_entries() {
    decisions STRATA_UID="$TUID" |
        jq -c --arg p "$FLOOD_PREFIX" \
            'select(.STRATA_DECISION == "deny-summary" or ((.STRATA_PATH // "") | startswith($p)))'
}
flood_entries >"$WORK/flood.json"
one_by_one=$(jq -s '[.[] | select(.STRATA_DECISION == "deny")] | length' "$WORK/flood.json")
summarised=$(jq -s '[.[] | select(.STRATA_DECISION == "deny-summary") | .STRATA_COUNT | tonumber] | add // 0' "$WORK/flood.json")
log "c) $one_by_one refusals logged one by one, $summarised in summaries: $(jq -r 'select(.STRATA_DECISION == "deny-summary") | .MESSAGE' "$WORK/flood.json")"
[ $((one_by_one + summarised)) -eq "$FLOOD" ] ||
    fail "$FLOOD refusals sent, but $one_by_one logged and $summarised summarised"
[ "$one_by_one" -lt "$FLOOD" ] || fail "no refusal was summarised: the per-uid rate does not hold"

# b) Bytes: every entry of the flood in journalctl's export format (what
# journald stores, before compression and indexes), each at most
# MAX_ENTRY, and in all at most MAX_ENTRY per request.
fs_journal -o export STRATA_UID="$TUID" >"$WORK/export"
total=$(wc -c <"$WORK/export")
largest=$(LC_ALL=C awk 'BEGIN { RS = "" } { if (length($0) > m) m = length($0) } END { print m + 0 }' "$WORK/export")
entries=$(LC_ALL=C awk 'BEGIN { RS = "" } END { print NR }' "$WORK/export")
log "b) journal: $entries entries, $total bytes in export format for $FLOOD requests of 1 MiB ($((total / FLOOD)) bytes per request); largest entry $largest bytes"
[ "$largest" -le "$MAX_ENTRY" ] || fail "an entry of $largest bytes: over the $MAX_ENTRY-byte bound"
[ "$total" -le $((FLOOD * MAX_ENTRY)) ] || fail "$total bytes for $FLOOD requests: over $MAX_ENTRY per request"

# c) The denial from before the flood is still in the journal.
has_path "$BEFORE" || fail "the denial made before the flood is gone from the journal"
pass
