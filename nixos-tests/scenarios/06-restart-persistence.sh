#!/usr/bin/env bash
# Restarting identity keeps the signing key (old tokens stay valid) and the
# revocations (revoked tokens stay refused); restarting fs likewise.
. "$(dirname "$0")/lib.sh"

fresh_start
make_testdata
good=$(issue_token open,read,list "$TD")
bad=$(issue_token open,read,list "$TD")
bad_cap=$(cap_id_of "$bad")
ok strata-ctl revoke "$bad_cap"
sleep 0.5
ok strata-ctl --token "$good" cat "$TD/hello.txt"
expect_rc 12 strata-ctl --token "$bad" cat "$TD/hello.txt"
key1=$(jget "$(strata-ctl identity.pubkey)" .result.public_key)

check_both() {
    wait_synced "$1"
    ok strata-ctl --token "$good" cat "$TD/hello.txt"
    [ "$OUT" = "hello strata" ] || fail "$1: good token read '$OUT'"
    expect_rc 12 strata-ctl --token "$bad" cat "$TD/hello.txt"
    ok strata-ctl verify "$good"
    [ "$(jget "$OUT" .valid)" = true ] || fail "$1: good token not valid: $OUT"
    ok strata-ctl verify "$bad"
    [ "$(jget "$OUT" .revoked)" = true ] || fail "$1: revoked token not revoked: $OUT"
}

pid=$(prop strata-identity.service MainPID)
log "systemctl restart strata-identity.service"
systemctl restart strata-identity.service
[ "$(prop strata-identity.service MainPID)" != "$pid" ] || fail "identity did not restart"
key2=$(jget "$(strata-ctl identity.pubkey)" .result.public_key)
[ "$key1" = "$key2" ] || fail "identity's public key changed across a restart"
check_both "after identity restart"

log "systemctl restart strata-fs.service"
systemctl restart strata-fs.service
check_both "after fs restart"

log "restart both at once"
systemctl restart strata-identity.service strata-fs.service
check_both "after restarting both"
pass
