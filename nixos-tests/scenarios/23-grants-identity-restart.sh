#!/usr/bin/env bash
# Grants across an identity restart (docs/grants.md, "Revocation when the
# unit stops"): identity keeps which tokens it minted for which unit in
# minted.json in its state directory, so that
#  - a unit started before identity was killed (SIGKILL, as a crash) still
#    has its token revoked by its ExecStopPost= revoke-unit, and fs refuses
#    it;
#  - a damaged minted.json does not stop identity: it revokes every cap id
#    still readable in it at start, keeps the file as minted.json.corrupt,
#    and hands out fresh tokens again.
. "$(dirname "$0")/lib.sh"

command -v journalctl >/dev/null || fail "journalctl is not in PATH"
CTL=$(command -v strata-ctl)
GRANTS=/etc/strata/grants.d
UNITS=/run/systemd/system
UNIT=strata-test-restarted.service
# identity's StateDirectory=strata/identity (a symlink to /var/lib/private
# with DynamicUser=).
STATE=/var/lib/strata/identity

cleanup() {
    systemctl stop "$UNIT" 2>/dev/null || true
    systemctl reset-failed "$UNIT" 2>/dev/null || true
    rm -f "$UNITS/$UNIT" "$GRANTS/restarted.json" "/run/${UNIT%.service}" "$STATE/minted.json.corrupt"
    rm -rf "/run/private/${UNIT%.service}"
    systemctl daemon-reload || true
}
trap cleanup EXIT

fresh_start
make_testdata
mkdir -p "$GRANTS"
cat >"$GRANTS/restarted.json" <<JSON
{"unit": "$UNIT", "service": "fs", "actions": ["list", "stat"],
 "path_prefix": "$TD", "ttl_seconds": 600}
JSON
T0=$(date '+%Y-%m-%d %H:%M:%S')
ok strata-ctl health identity
ok systemctl reload strata-identity.service
loaded() { journalctl -u strata-identity.service --since "$T0" -o cat | grep -q 'grant(s):.*restarted'; }
wait_until 20 "identity loads the grant" loaded

cat >"$UNITS/$UNIT" <<UNIT
[Unit]
Description=Strata scenario: a grant's unit across identity restarts
Wants=strata-identity-credentials.socket
After=strata-identity-credentials.socket

[Service]
Type=oneshot
RemainAfterExit=yes
DynamicUser=yes
Environment=STRATA_RUNTIME_DIR=$STRATA_RUNTIME_DIR
LoadCredential=strata-restarted:$STRATA_RUNTIME_DIR/credentials.sock
ExecStart=$CTL ls $TD
# The token, copied out, to try it after the stop.
RuntimeDirectory=%N
RuntimeDirectoryPreserve=yes
ExecStart=/bin/sh -c 'cat "\$\$CREDENTIALS_DIRECTORY/strata-restarted" >"\$\$RUNTIME_DIRECTORY/token"'
ExecStopPost=+$CTL revoke-unit %n
UNIT
systemctl daemon-reload

# start_unit: starts the unit and prints its token.
start_unit() {
    local t
    t=$(date '+%Y-%m-%d %H:%M:%S')
    systemctl start "$UNIT" || fail "$UNIT failed: $(journalctl -u "$UNIT" --since "$t" -o cat | tail -n 20)"
    local token
    token=$(cat "/run/${UNIT%.service}/token")
    [ -n "$token" ] || fail "$UNIT's credential is empty"
    printf '%s\n' "$token"
}
# identity_back OLD_PID: a new identity process answers.
identity_back() {
    local p
    p=$(prop strata-identity.service MainPID)
    [ "$p" -gt 0 ] && [ "$p" != "$1" ] && strata-ctl health identity >/dev/null 2>&1
}

TOKEN=$(start_unit)
CAP=$(cap_id_of "$TOKEN")
STATE_FILE=$(readlink -f "$STATE")/minted.json
grep -q "$CAP" "$STATE_FILE" || fail "minted.json does not list $CAP: $(head -c 300 "$STATE_FILE")"
mode=$(stat -c %a "$STATE_FILE")
[ "$mode" = 600 ] || fail "minted.json has mode $mode, not 600"
log "minted.json lists $CAP (mode $mode)"

# identity crashes while the unit runs.
pid=$(prop strata-identity.service MainPID)
systemctl kill -s KILL strata-identity.service
wait_until 30 "identity back after SIGKILL" identity_back "$pid"
log "identity killed (pid $pid) and back (pid $(prop strata-identity.service MainPID))"
# Still valid at fs: refused to this shell only because it is bound to the
# unit (13, code 3), not revoked (12, code 2).
STRATA_TOKEN=$TOKEN expect_rc 13 strata-ctl ls "$TD"

# The unit stops: its ExecStopPost= revokes the token minted before the kill.
systemctl stop "$UNIT"
t0=$(date +%s%N)
# revoked TOKEN: fs refuses the token as revoked (exit 12, code 2).
revoked() { STRATA_TOKEN=$1 strata-ctl ls "$TD" >/dev/null 2>&1; [ $? = 12 ]; }
refused() { revoked "$TOKEN"; }
wait_until 5 "fs refuses the token minted before identity's restart" refused
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ "$(STRATA_TOKEN=$TOKEN strata-ctl whoami | jq -r .revoked)" = true ] || fail "identity does not list $CAP as revoked"
log "token $CAP, minted before the kill, refused by fs ${ms} ms after 'systemctl stop' returned"
if grep -q "$CAP" "$STATE_FILE"; then fail "minted.json still lists the revoked $CAP"; fi

# A damaged minted.json: identity still starts, and revokes what it lists.
TOKEN2=$(start_unit)
CAP2=$(cap_id_of "$TOKEN2")
# Cut short in place (owner and mode kept) while identity runs: it only
# writes the file when a unit starts or stops, so the damage is what the
# next start reads.
truncate -s -4 "$STATE_FILE"
if jq . "$STATE_FILE" >/dev/null 2>&1; then fail "the cut minted.json still parses"; fi
grep -q "$CAP2" "$STATE_FILE" || fail "the cut minted.json no longer shows $CAP2"
T2=$(date '+%Y-%m-%d %H:%M:%S')
pid=$(prop strata-identity.service MainPID)
systemctl kill -s KILL strata-identity.service
wait_until 30 "identity back despite the damaged minted.json" identity_back "$pid"
[ "$(STRATA_TOKEN=$TOKEN2 strata-ctl whoami | jq -r .revoked)" = true ] \
    || fail "$CAP2, listed in the damaged minted.json, is not revoked"
wait_until 5 "fs refuses the token listed in the damaged file" revoked "$TOKEN2"
[ -f "$STATE_FILE.corrupt" ] || fail "the damaged file was not kept as minted.json.corrupt"
said=$(journalctl -u strata-identity.service --since "$T2" -o cat | grep 'minted.json is corrupt' | tail -n 1)
[ -n "$said" ] || fail "identity did not log the damaged minted.json"
log "identity: $said"
systemctl stop "$UNIT"
TOKEN3=$(start_unit)
STRATA_TOKEN=$TOKEN3 expect_rc 13 strata-ctl ls "$TD"
grep -q "$(cap_id_of "$TOKEN3")" "$STATE_FILE" || fail "the fresh token is not recorded in a new minted.json"
systemctl stop "$UNIT"
wait_until 5 "fs refuses the fresh token as revoked after the stop" revoked "$TOKEN3"
pass
