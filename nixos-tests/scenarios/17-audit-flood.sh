#!/usr/bin/env bash
# A flood of allowed requests does not push decisions out of the journal.
# journald's default rate limit (10,000 messages per 30 s per service,
# scaled by free disk space) would drop fs's entries under load — and with
# them the denials an attacker makes right after flooding with a valid
# token. The units raise LogRateLimitBurst= out of reach; this checks that,
# under STRATA_FLOOD_CONNS (8) clients in rounds of STRATA_FLOOD_DURATION
# (3) s until the flood is twice journald's default limit for this disk:
#  - every allowed request strata-loadgen counted has exactly one journal
#    entry (and no request failed);
#  - a denial made right after the flood is in the journal.
# (journald's own "Suppressed N messages" line comes only when its 30 s
# window ends, too late to check here; the exact count is the check.)
. "$(dirname "$0")/lib.sh"
command -v strata-loadgen >/dev/null 2>&1 || fail "strata-loadgen is not in PATH ($PATH)"
command -v journalctl >/dev/null || fail "journalctl is not in PATH"

DURATION=${STRATA_FLOOD_DURATION:-3}
CONNS=${STRATA_FLOOD_CONNS:-8}
LOAD=$TD/flood
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

burst=$(prop strata-fs.service LogRateLimitBurst)
[ "${burst:-0}" -ge 1000000 ] ||
    fail "strata-fs.service keeps a journal rate limit: LogRateLimitBurst=$burst"
# An interval of 0 reads as set but is never passed on to journald.
interval=$(prop strata-fs.service LogRateLimitIntervalUSec)
case $interval in 0 | "" | infinity) fail "LogRateLimitIntervalUSec=$interval: journald's default would apply" ;; esac

# journald's default limit for one unit: 10,000 per 30 s, times
# (log2(free bytes) - 16) / 4 — more on a larger disk. The flood must
# exceed it (twice over) for the scenario to mean anything.
JDIR=/var/log/journal
[ -d "$JDIR" ] || JDIR=/run/log/journal
free=$(df --output=avail -B1 "$JDIR" | tail -n 1)
DEFAULT_LIMIT=$(awk -v f="$free" 'BEGIN { k = int(log(f) / log(2)); b = (k > 20) ? int(10000 * (k - 16) / 4) : 10000; print b }')
log "journald's default limit here: $DEFAULT_LIMIT entries per 30 s"

fresh_start
make_testdata
strata-loadgen make-tree --dir "$LOAD" --files 16 >/dev/null
ISSUED=$(strata-ctl issue --service fs --actions open,read,list --path-prefix "$LOAD" --ttl 600)
CAP_ID=$(jget "$ISSUED" .cap_id)
# Rounds of DURATION s until the flood is twice journald's default limit
# (at most 6); every answer checked, none may fail.
ALLOWED=0
round=0
while [ "$ALLOWED" -le $((2 * DEFAULT_LIMIT)) ] && [ "$round" -lt 6 ]; do
    round=$((round + 1))
    STRATA_TOKEN=$(jget "$ISSUED" .token) strata-loadgen mixed --conns "$CONNS" --duration "$DURATION" \
        --dir "$LOAD" --report "$WORK/report.json" >/dev/null 2>"$WORK/stderr" ||
        fail "strata-loadgen failed: $(cat "$WORK/stderr")"
    R=$(cat "$WORK/report.json")
    for k in wrong errors_total failures_total refusals; do
        [ "$(jget "$R" ".$k")" = 0 ] || fail "round $round: $k = $(jget "$R" ".$k"): $(printf '%s' "$R" | jq -c 'del(.failure_times_ms)')"
    done
    ALLOWED=$((ALLOWED + $(jget "$R" .ok)))
done
[ "$ALLOWED" -gt $((2 * DEFAULT_LIMIT)) ] ||
    fail "the flood was too small to matter: $ALLOWED requests in $round rounds, journald's default limit $DEFAULT_LIMIT"
log "flood: $ALLOWED allowed requests in $round round(s) of $DURATION s"

# A denial right after the flood, with a path no other scenario uses.
DENIED_PATH=/etc/strata-flood-$$-$RANDOM
STRATA_TOKEN=$(jget "$ISSUED" .token) expect_rc 13 strata-ctl cat "$DENIED_PATH"

entries() { journalctl -u strata-fs.service -o cat STRATA_CAP_ID="$CAP_ID" "$@" 2>/dev/null | wc -l; }
has_denial() { [ "$(entries STRATA_DECISION=deny STRATA_PATH="$DENIED_PATH")" -ge 1 ]; }
# journald may still be writing the flood; give it time.
wait_until 120 "the deny entry for $DENIED_PATH" has_denial
ALLOWS=$(entries STRATA_DECISION=allow)
log "journal: $ALLOWS allow entries for the flood's capability"
[ "$ALLOWS" -eq "$ALLOWED" ] ||
    fail "$ALLOWED allowed requests but $ALLOWS allow entries: decisions were lost (or invented)"
pass
