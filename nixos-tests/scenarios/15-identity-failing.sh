#!/usr/bin/env bash
# Identity failing: once fs has synced with identity, identity's signing
# key is made unreadable (chmod 000) and identity is killed, so that every
# start fails until systemd gives up (start limit). Meanwhile:
#  - fs keeps serving valid tokens, with the key it already holds, on new
#    connections too;
#  - fs keeps refusing the token revoked before the failure (no new
#    revocation can happen while identity is down);
#  - supervisor.status reports identity unhealthy, with a detail, and
#    `journalctl -u strata-identity` says what is wrong (the key file and
#    the error).
# Then the key is made readable again: identity starts, fs resyncs, tokens
# issued before work, a new one can be issued.
#
# Why the key file and not the state directory: systemd re-applies
# StateDirectoryMode= (0700) to the directory at every start, so a
# `chmod 000` of the directory heals itself at the next start; a key file
# its owner cannot read does not.
. "$(dirname "$0")/lib.sh"

STATE=/var/lib/strata/identity
key_file=""
cleanup() {
    if [ -n "$key_file" ] && [ -f "$key_file" ]; then chmod 600 "$key_file"; fi
    systemctl reset-failed strata-identity.service strata-identity.socket 2>/dev/null || true
    systemctl start strata-identity.socket 2>/dev/null || true
}
trap cleanup EXIT

# The token reads, and the revoked one is refused, each on a new
# connection (strata-ctl connects per call).
serves() {
    ok strata-ctl --token "$good" cat "$TD/hello.txt"
    [ "$OUT" = "hello strata" ] || fail "$1: valid token read '$OUT'"
    ok strata-ctl --token "$good" ls "$TD"
    expect_rc 12 strata-ctl --token "$bad" cat "$TD/hello.txt"
}

fresh_start
make_testdata
good=$(issue_token open,read,list "$TD" 3600)
bad=$(issue_token open,read,list "$TD" 3600)
ok strata-ctl revoke "$(cap_id_of "$bad")"
pub=$(jget "$(strata-ctl identity.pubkey)" .result.public_key)
ok strata-ctl health fs
wait_synced "before the failure"
serves "before the failure"
fs_pid=$(prop strata-fs.service MainPID)
id_pid=$(prop strata-identity.service MainPID)

key_file=$(readlink -f "$STATE/signing.key")
[ -f "$key_file" ] || fail "no signing key at $STATE/signing.key"
cursor=$(journalctl -n0 --show-cursor --no-pager 2>/dev/null | sed -n 's/^-- cursor: //p') || true
log "chmod 000 $key_file; SIGKILL identity (pid $id_pid)"
chmod 000 "$key_file"
systemctl kill -s KILL strata-identity.service

# Restart=on-failure tries again and again; every start fails; after
# StartLimitBurst starts systemd gives up and the unit is failed.
given_up() { [ "$(active_state strata-identity.service)" = failed ]; }
wait_until 60 "identity failed for good" given_up
log "identity: $(prop strata-identity.service ActiveState) ($(prop strata-identity.service Result)), NRestarts $(prop strata-identity.service NRestarts); socket: $(active_state strata-identity.socket) ($(prop strata-identity.socket Result))"
# It stays down: a call to identity does not bring it back.
run strata-ctl health identity
[ "$RC" != 0 ] || fail "identity answered although it cannot start: $OUT"
log "strata-ctl health identity: exit $RC, $ERR"
run strata-ctl issue --service fs --actions read --path-prefix "$TD"
[ "$RC" != 0 ] || fail "a token was issued while identity cannot start"

# fs: the same process, still serving.
[ "$(prop strata-fs.service MainPID)" = "$fs_pid" ] || fail "fs was restarted (pid $fs_pid -> $(prop strata-fs.service MainPID))"
serves "identity down"
ok strata-ctl health fs
[ "$(jget "$OUT" .identity)" = unavailable ] || fail "fs.health while identity is down: $OUT"
log "fs (pid $fs_pid) serves the valid token and refuses the revoked one; fs.health: $OUT"

# The supervisor says so.
identity_unhealthy() {
    [ "$(strata-ctl status | jq -r .services.identity.state)" = unhealthy ]
}
if ! (wait_until 20 "supervisor reports identity unhealthy" identity_unhealthy); then
    fail "supervisor.status: $(strata-ctl status 2>&1)"
fi
ok strata-ctl status
detail=$(jget "$OUT" .services.identity.detail)
[ -n "$detail" ] || fail "no detail for identity in supervisor.status: $OUT"
log "supervisor.status identity: $(printf '%s' "$OUT" | jq -c .services.identity)"

# The journal says what is wrong: the file and the error.
if [ -n "$cursor" ]; then
    journal=$(journalctl --no-pager -u strata-identity.service --after-cursor="$cursor")
else
    journal=$(journalctl --no-pager -u strata-identity.service -n 50)
fi
why=$(printf '%s\n' "$journal" | grep -F signing.key | grep -i 'permission denied' | tail -n1 || true)
[ -n "$why" ] || fail "journalctl -u strata-identity does not name signing.key and the error: $(printf '%s\n' "$journal" | tail -n 15)"
log "journal: $why"
gave_up=$(printf '%s\n' "$journal" | grep -iE 'start request repeated too quickly|start-limit' | tail -n1 || true)
[ -z "$gave_up" ] || log "journal: $gave_up"

# Recovery: the key readable again, the failed state cleared.
log "chmod 600 $key_file; reset-failed; start the socket"
chmod 600 "$key_file"
systemctl reset-failed strata-identity.service strata-identity.socket
systemctl start strata-identity.socket
ok strata-ctl health identity
[ "$(jget "$(strata-ctl identity.pubkey)" .result.public_key)" = "$pub" ] || fail "identity came back with another key"
wait_synced "after recovery"
serves "after recovery"
ok strata-ctl verify "$good"
[ "$(jget "$OUT" .valid)" = true ] || fail "token from before the failure not valid after recovery: $OUT"
new=$(issue_token list "$TD")
ok strata-ctl --token "$new" ls "$TD"
identity_healthy() { [ "$(strata-ctl status | jq -r .services.identity.state)" = healthy ]; }
wait_until 20 "supervisor reports identity healthy again" identity_healthy
log "recovered: same key, fs synced, old and new tokens work, supervisor reports identity healthy"
pass
