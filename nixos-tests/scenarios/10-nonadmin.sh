#!/usr/bin/env bash
# A user who is not an administrator cannot issue tokens (code 3, exit 13),
# but can use a token an administrator handed over, and can revoke that
# token (a holder may revoke its own capability) but no other.
. "$(dirname "$0")/lib.sh"

fresh_start
make_testdata
if ! id "$STRATA_TEST_USER" >/dev/null 2>&1; then
    log "creating user $STRATA_TEST_USER"
    useradd --system --no-create-home --shell /bin/sh "$STRATA_TEST_USER"
fi
uid=$(id -u "$STRATA_TEST_USER")
[ "$uid" != 0 ] || fail "$STRATA_TEST_USER is root"

expect_rc 13 as_user "$STRATA_TEST_USER" strata-ctl issue --service fs --actions read --path-prefix "$TD"
expect_rc 13 as_user "$STRATA_TEST_USER" strata-ctl identity.issue \
    "{\"service\":\"fs\",\"actions\":[\"read\"],\"path_prefix\":\"$TD\"}"
log "uid $uid cannot issue"

tok=$(issue_token open,read,list "$TD")
other=$(issue_token list "$TD")
STRATA_TOKEN=$tok expect_rc 0 as_user "$STRATA_TEST_USER" strata-ctl cat "$TD/hello.txt"
[ "$OUT" = "hello strata" ] || fail "user read '$OUT'"
expect_rc 0 as_user "$STRATA_TEST_USER" strata-ctl --token "$tok" ls "$TD"
# The token does not widen: outside its prefix is still refused.
STRATA_TOKEN=$tok expect_rc 13 as_user "$STRATA_TEST_USER" strata-ctl cat "$TD2/secret.txt"
log "uid $uid uses a handed-over token"

# It may not revoke someone else's capability...
other_cap=$(cap_id_of "$other")
STRATA_TOKEN=$tok expect_rc 13 as_user "$STRATA_TEST_USER" strata-ctl revoke "$other_cap"
ok strata-ctl --token "$other" ls "$TD"
# ...but may revoke its own.
cap=$(cap_id_of "$tok")
STRATA_TOKEN=$tok expect_rc 0 as_user "$STRATA_TEST_USER" strata-ctl revoke "$cap"
sleep 0.5
STRATA_TOKEN=$tok expect_rc 12 as_user "$STRATA_TEST_USER" strata-ctl cat "$TD/hello.txt"
pass
