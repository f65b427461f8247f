#!/usr/bin/env bash
# Grants (docs/grants.md): a grant file for a unit, and the unit — with
# DynamicUser=yes and nothing but
#   LoadCredential=strata-reader:/run/strata/credentials.sock
# — runs plain `strata-ctl ls` on the prefix: systemd fetched the token from
# identity's credential socket when it started the unit. A second unit that
# declares the same credential but is not the grant's unit gets no token and
# fails, and identity's audit trail says why. The token is bound to the
# unit: copied out, it is refused to root's shell and to another unit; it
# is revoked when the unit stops, and a restart gets a new one.
. "$(dirname "$0")/lib.sh"

command -v journalctl >/dev/null || fail "journalctl is not in PATH"
CTL=$(command -v strata-ctl)
GRANTS=/etc/strata/grants.d
UNITS=/run/systemd/system
READER=strata-test-reader.service
THIEF=strata-test-thief.service

cleanup() {
    systemctl stop "$READER" "$THIEF" 2>/dev/null || true
    systemctl reset-failed "$READER" "$THIEF" 2>/dev/null || true
    rm -f "$UNITS/$READER" "$UNITS/$THIEF" "$GRANTS/reader.json" "$GRANTS/bad.json" \
        "/run/${READER%.service}" "/run/${THIEF%.service}"
    rm -rf "/run/private/${READER%.service}" "/run/private/${THIEF%.service}"
    systemctl daemon-reload || true
}
trap cleanup EXIT

fresh_start
make_testdata
mkdir -p "$GRANTS"
cat >"$GRANTS/reader.json" <<JSON
{"unit": "$READER", "service": "fs", "actions": ["list", "stat", "open", "read", "delegate"],
 "path_prefix": "$TD", "ttl_seconds": 600}
JSON
# A bad file is refused, naming the file and the field; the good one loads.
printf '{"service":"fs","actions":["list"],"path_prefix":"%s","holder":"x"}\n' "$TD" >"$GRANTS/bad.json"
T0=$(date '+%Y-%m-%d %H:%M:%S')
# identity reads the grants at start (here: started by this call) and on
# `systemctl reload`.
ok strata-ctl health identity
ok systemctl reload strata-identity.service
loaded() { journalctl -u strata-identity.service --since "$T0" -o cat | grep -q 'loaded 1 grant(s): reader; refused 1'; }
wait_until 20 "identity logs the grants it loaded" loaded
refusal=$(journalctl -u strata-identity.service --since "$T0" -o cat | grep 'bad.json' | tail -n 1)
case $refusal in *'"holder"'*) ;; *) fail "the refusal should name bad.json and the field \"holder\": $refusal" ;; esac
log "refused: $refusal"

unit() { # NAME: a consumer of credential strata-reader
    cat >"$UNITS/$1" <<UNIT
[Unit]
Description=Strata grants scenario: $1
Wants=strata-identity-credentials.socket
After=strata-identity-credentials.socket

[Service]
Type=oneshot
RemainAfterExit=yes
DynamicUser=yes
Environment=STRATA_RUNTIME_DIR=$STRATA_RUNTIME_DIR
LoadCredential=strata-reader:$STRATA_RUNTIME_DIR/credentials.sock
ExecStart=$CTL ls $TD
# For this scenario only: the token, copied out, to try it after the stop
# (from ExecStart=: a '+' command does not see the credentials, and
# ExecStartPost= was refused them, under systemd 252).
RuntimeDirectory=%N
RuntimeDirectoryPreserve=yes
ExecStart=/bin/sh -c 'cat "\$\$CREDENTIALS_DIRECTORY/strata-reader" >"\$\$RUNTIME_DIRECTORY/token"'
# Delegation from the bound token (identity checks the unit's binding): a
# child for one subdirectory, handed to root.
ExecStart=/bin/sh -c '$CTL delegate --actions list --path-prefix $TD/sub --holder-uid 0 --quiet >"\$\$RUNTIME_DIRECTORY/child"'
# What the NixOS module and docs/grants.md add: the unit's tokens die with it.
ExecStopPost=+$CTL revoke-unit %n
UNIT
}
unit "$READER"
unit "$THIEF"
systemctl daemon-reload

T1=$(date '+%Y-%m-%d %H:%M:%S')
systemctl start "$READER" || fail "$READER failed: $(journalctl -u "$READER" --since "$T1" -o cat | tail -n 20)"
out=$(journalctl -u "$READER" --since "$T1" -o cat)
case $out in *hello.txt*) ;; *) fail "$READER did not list $TD: $out" ;; esac
log "$READER listed $TD with its granted credential"
TOKEN=$(cat "/run/${READER%.service}/token")
[ -n "$TOKEN" ] || fail "$READER's credential is empty"
CAP=$(cap_id_of "$TOKEN")
[ "$(STRATA_TOKEN=$TOKEN strata-ctl whoami | jq -c .holder)" = "{\"unit\":\"$READER\"}" ] ||
    fail "the token is not bound to $READER: $(STRATA_TOKEN=$TOKEN strata-ctl whoami)"

# Copied out, the token is worth nothing while the unit runs: refused to
# root's shell, and to another unit (code 3), each with an audit record.
SEQ=$(trail_head_seq /var/log/strata/fs)
STRATA_TOKEN=$TOKEN expect_rc 13 strata-ctl ls "$TD"
case $ERR in *"token is bound to unit $READER"*) ;; *) fail "root's shell: $ERR" ;; esac
log "root's shell: $(printf '%s' "$ERR" | head -n 1)"
run systemd-run --quiet --wait --pipe --collect -p DynamicUser=yes \
    -E STRATA_RUNTIME_DIR="$STRATA_RUNTIME_DIR" -E STRATA_TOKEN="$TOKEN" "$CTL" ls "$TD"
[ "$RC" != 0 ] || fail "another unit listed $TD with $READER's token: $OUT"
case $ERR in *"token is bound to unit $READER"*"is in run-"*.service*) ;; *) fail "another unit: rc $RC, $ERR" ;; esac
log "another unit: $(printf '%s' "$ERR" | head -n 1)"
refusals=$(trail_records /var/log/strata/fs "$SEQ" |
    jq -c --arg cap "$CAP" 'select(.cap_id == $cap and .code == 3 and (.reason | contains("token is bound to unit")))' | wc -l)
[ "$refusals" = 2 ] || fail "fs's trail should hold 2 refusals of $CAP, holds $refusals"

# The child the unit delegated to root: narrower, and usable by root.
CHILD=$(cat "/run/${READER%.service}/child")
[ -n "$CHILD" ] || fail "$READER delegated no child"
# (Its parent is the unit's credential as that ExecStart= saw it: systemd 252
# fetches the credential anew for each command, so it may not be $CAP.)
[ "$(STRATA_TOKEN=$CHILD strata-ctl whoami | jq -c '[(.chain | length), .holder]')" = '[1,{"uid":0}]' ] ||
    fail "the child's chain or holder: $(STRATA_TOKEN=$CHILD strata-ctl whoami)"
STRATA_TOKEN=$CHILD ok strata-ctl ls "$TD/sub"
STRATA_TOKEN=$CHILD expect_rc 13 strata-ctl ls "$TD"
log "$READER delegated a child for $TD/sub to uid 0, which lists it and nothing more"

# Stopping the unit revokes its token (ExecStopPost=+strata-ctl revoke-unit)
# before `systemctl stop` returns; fs learns it within 100 ms. Revocation
# is checked before the holder, so root's shell now gets code 2, revoked.
systemctl stop "$READER"
t0=$(date +%s%N)
# Exit 12: code 2, the token (revoked), where it was 13 (bound) before.
until rc=0; STRATA_TOKEN=$TOKEN strata-ctl ls "$TD" >/dev/null 2>&1 || rc=$?; [ "$rc" = 12 ]; do
    [ $(( $(date +%s%N) - t0 )) -lt 5000000000 ] || fail "fs still does not refuse $CAP as revoked 5 s after the stop"
done
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
log "token $CAP refused by fs as revoked ${ms} ms after 'systemctl stop' returned"
[ "$ms" -le 100 ] || fail "the revocation took ${ms} ms to reach fs (bound: 100 ms)"
[ "$(STRATA_TOKEN=$TOKEN strata-ctl whoami | jq -r .revoked)" = true ] || fail "identity does not list $CAP as revoked"
# ... and with it the child delegated from it.
STRATA_TOKEN=$CHILD expect_rc 12 strata-ctl ls "$TD/sub"

# A restart gets a fresh token, bound again, that works in the unit (its
# ExecStart= lists again); the old one stays revoked.
T3=$(date '+%Y-%m-%d %H:%M:%S')
systemctl start "$READER" || fail "$READER failed to start again: $(journalctl -u "$READER" --since "$T3" -o cat | tail -n 20)"
NEW=$(cat "/run/${READER%.service}/token")
[ "$NEW" != "$TOKEN" ] || fail "the restarted unit got the old token"
case $(journalctl -u "$READER" --since "$T3" -o cat) in *hello.txt*) ;; *) fail "$READER did not list $TD after the restart" ;; esac
[ "$(STRATA_TOKEN=$NEW strata-ctl whoami | jq -r .valid)" = true ] || fail "the new token is not valid"
STRATA_TOKEN=$TOKEN expect_rc 12 strata-ctl ls "$TD"
systemctl stop "$READER"

T2=$(date '+%Y-%m-%d %H:%M:%S')
if systemctl start "$THIEF"; then
    fail "$THIEF started although the grant is for $READER: $(journalctl -u "$THIEF" --since "$T2" -o cat)"
fi
log "$THIEF: $(prop "$THIEF" Result); $(journalctl -u "$THIEF" --since "$T2" -o cat | tail -n 3 | tr '\n' ' ')"
why() {
    journalctl -u strata-identity.service --since "$T2" -o cat | grep 'identity.credential' | grep -q "not for $THIEF"
}
wait_until 20 "identity's audit record of the refusal" why
log "identity: $(journalctl -u strata-identity.service --since "$T2" -o cat | grep 'identity.credential' | tail -n 1)"
pass
