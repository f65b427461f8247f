#!/usr/bin/env bash
# Every refusal is one journal entry with structured fields, so that
# `journalctl -u strata-fs STRATA_DECISION=deny` lists the refusals: who
# asked (uid, pid from the peer credentials), for what (method, cap_id,
# path), the outcome and the reason. Every decision, allowed or refused,
# is a record of fs's audit trail (/var/log/strata/fs, docs/audit.md);
# allowed ones are not journal entries.
. "$(dirname "$0")/lib.sh"

command -v journalctl >/dev/null || fail "journalctl is not in PATH"

TRAIL=/var/log/strata/fs
fresh_start
SEQ0=$(trail_head_seq "$TRAIL")
make_testdata
ISSUED=$(strata-ctl issue --service fs --actions open,read,list --path-prefix "$TD" --ttl 600)
STRATA_TOKEN=$(jget "$ISSUED" .token)
CAP_ID=$(jget "$ISSUED" .cap_id)
export STRATA_TOKEN

ok strata-ctl ls "$TD"
expect_rc 13 strata-ctl cat /etc/passwd
# stat is not among the token's actions.
expect_rc 13 strata-ctl stat "$TD/hello.txt"

# Entries reach the journal asynchronously; wait for them. The token's
# cap_id is fresh, so matching on it selects this scenario's entries only.
decisions() {
    journalctl -u strata-fs.service -o json STRATA_CAP_ID="$CAP_ID" "$@" 2>/dev/null
}
has_denials() { [ "$(decisions STRATA_DECISION=deny | wc -l)" -ge 2 ]; }
wait_until 20 "two deny entries from strata-fs for $CAP_ID" has_denials

DENY=$(decisions STRATA_DECISION=deny | jq -s .)
# The /etc/passwd refusal: every field the issue names.
ENTRY=$(printf '%s' "$DENY" | jq -c '[.[] | select(.STRATA_PATH == "/etc/passwd")][0]')
[ "$ENTRY" != null ] || fail "no deny entry for /etc/passwd in: $DENY"
[ "$(jget "$ENTRY" .STRATA_UID)" = 0 ] || fail "STRATA_UID: want 0 (root ran strata-ctl): $ENTRY"
[ "$(jget "$ENTRY" .STRATA_METHOD)" = fs.open ] || fail "STRATA_METHOD: $ENTRY"
[ "$(jget "$ENTRY" .STRATA_CAP_ID)" = "$CAP_ID" ] || fail "STRATA_CAP_ID: want $CAP_ID: $ENTRY"
[ "$(jget "$ENTRY" .STRATA_PID)" -gt 0 ] || fail "STRATA_PID: $ENTRY"
reason=$(jget "$ENTRY" .STRATA_REASON)
case $reason in *prefix*) ;; *) fail "STRATA_REASON should say the path is outside the prefix: $reason" ;; esac
log "deny entry: $reason"

# The missing action is recorded with its own reason.
STAT=$(printf '%s' "$DENY" | jq -c '[.[] | select(.STRATA_METHOD == "fs.stat")][0]')
[ "$STAT" != null ] || fail "no deny entry for fs.stat in: $DENY"
case $(jget "$STAT" .STRATA_REASON) in *stat*) ;; *) fail "fs.stat denial should name the action: $STAT" ;; esac

# The allowed list is a record of the trail, not a journal entry; the
# refusals are records too, with the same fields.
trail_records "$TRAIL" "$SEQ0" | jq -c --arg c "$CAP_ID" 'select(.cap_id == $c)' >"${TMPDIR:-/tmp}/16-trail.$$"
mine() { jq -c "$1" "${TMPDIR:-/tmp}/16-trail.$$"; }
ALLOW=$(mine 'select(.decision == "allow" and .method == "fs.list")')
[ -n "$ALLOW" ] || fail "no allow record for fs.list in the trail: $(cat "${TMPDIR:-/tmp}/16-trail.$$")"
[ "$(jget "$ALLOW" .uid)" = 0 ] && [ "$(jget "$ALLOW" .path)" = "$TD" ] || fail "allow record: $ALLOW"
TRAIL_DENY=$(mine 'select(.decision == "deny" and .path == "/etc/passwd")')
[ "$(jget "$TRAIL_DENY" .method)" = fs.open ] && [ "$(jget "$TRAIL_DENY" .code)" = 3 ] ||
    fail "deny record for /etc/passwd: $TRAIL_DENY"
case $(jget "$TRAIL_DENY" .reason) in *prefix*) ;; *) fail "trail reason: $TRAIL_DENY" ;; esac
rm -f "${TMPDIR:-/tmp}/16-trail.$$"
[ "$(decisions STRATA_DECISION=allow | wc -l)" = 0 ] ||
    fail "allow entries in the journal: allowed requests go to the trail only"
pass
