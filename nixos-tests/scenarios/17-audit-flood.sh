#!/usr/bin/env bash
# A flood of allowed requests does not push decisions out of the journal.
# journald's default rate limit (10,000 messages per 30 s per service,
# scaled by free disk space) would drop fs's entries under load — and with
# them the denials an attacker makes right after flooding with a valid
# token. The units raise LogRateLimitBurst= out of reach; this checks that,
# under STRATA_FLOOD_CONNS (8) clients for STRATA_FLOOD_DURATION (3) s:
#  - every allowed request strata-loadgen counted has its journal entry;
#  - a denial made right after the flood is in the journal;
#  - journald suppressed nothing from strata-fs.
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

fresh_start
make_testdata
strata-loadgen make-tree --dir "$LOAD" --files 16 >/dev/null
ISSUED=$(strata-ctl issue --service fs --actions open,read,list --path-prefix "$LOAD" --ttl 600)
CAP_ID=$(jget "$ISSUED" .cap_id)
SINCE=$(date '+%Y-%m-%d %H:%M:%S')
# journald's own count of what it dropped is logged by journald itself.
suppressed() {
    journalctl --since "$SINCE" -o cat _PID=1 SYSLOG_IDENTIFIER=systemd-journald 2>/dev/null |
        grep -c 'Suppressed .* strata-fs' || true
}

STRATA_TOKEN=$(jget "$ISSUED" .token) strata-loadgen mixed --conns "$CONNS" --duration "$DURATION" \
    --dir "$LOAD" --report "$WORK/report.json" >/dev/null 2>"$WORK/stderr" ||
    fail "strata-loadgen failed: $(cat "$WORK/stderr")"
ALLOWED=$(jq -r .ok "$WORK/report.json")
[ "$ALLOWED" -gt 10000 ] || fail "the flood was too small to matter: $ALLOWED requests"
log "flood: $ALLOWED allowed requests in $DURATION s"

# A denial right after the flood, with a path no other scenario uses.
DENIED_PATH=/etc/strata-flood-$$-$RANDOM
STRATA_TOKEN=$(jget "$ISSUED" .token) expect_rc 13 strata-ctl cat "$DENIED_PATH"

entries() { journalctl -u strata-fs.service -o cat STRATA_CAP_ID="$CAP_ID" "$@" 2>/dev/null | wc -l; }
has_denial() { [ "$(entries STRATA_DECISION=deny STRATA_PATH="$DENIED_PATH")" -ge 1 ]; }
# journald may still be writing the flood; give it time.
wait_until 120 "the deny entry for $DENIED_PATH" has_denial
ALLOWS=$(entries STRATA_DECISION=allow)
log "journal: $ALLOWS allow entries for the flood's capability"
[ "$ALLOWS" -ge "$ALLOWED" ] ||
    fail "$ALLOWED allowed requests but only $ALLOWS allow entries: decisions were lost"
n=$(suppressed)
[ "$n" = 0 ] || fail "journald suppressed strata-fs messages $n times"
pass
