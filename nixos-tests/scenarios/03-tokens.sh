#!/usr/bin/env bash
# The life of a capability: issue, list, stat, open, read, revoke; after the
# revocation the same token is refused (code 2, exit 12), handles included.
. "$(dirname "$0")/lib.sh"

fresh_start
make_testdata

ok strata-ctl issue --service fs --actions open,read,list,stat --path-prefix "$TD" --ttl 600
tok=$(jget "$OUT" .token)
cap=$(jget "$OUT" .cap_id)
exp=$(jget "$OUT" .expires)
case $tok in v2.public.*) ;; *) fail "token is not v2.public: $tok" ;; esac
printf '%s' "$cap" | grep -Eq '^[0-9a-f]{32}$' || fail "cap_id is not 32 hex digits: $cap"
now=$(date +%s)
[ "$exp" -gt "$now" ] && [ "$exp" -le $((now + 660)) ] || fail "expires $exp is not now+600 (now $now)"
export STRATA_TOKEN=$tok

ok strata-ctl whoami
[ "$(jget "$OUT" .jti)" = "$cap" ] || fail "whoami jti differs from cap_id: $OUT"
ok strata-ctl verify "$tok"
[ "$(jget "$OUT" .valid)" = true ] || fail "verify says not valid: $OUT"
# v0.3.2's name for verify, through the raw form.
ok strata-ctl identity.introspect "{\"token\":\"$tok\"}"
[ "$(jget "$OUT" .result.valid)" = true ] && [ "$(jget "$OUT" .result.claims.jti)" = "$cap" ] ||
    fail "identity.introspect: $OUT"
# Addressed to this node: the node id defaults to the host name, which the
# services read with uname(2) (their ProcSubset=pid hides /proc/sys).
node=$(uname -n)
ok strata-ctl whoami
[ "$(jget "$OUT" .iss)" = "identity@$node" ] && [ "$(jget "$OUT" .aud)" = strata ] ||
    fail "iss/aud of an issued token: $OUT"

ok strata-ctl ls "$TD"
names=$(printf '%s' "$OUT" | jq -r '.entries[].name' | tr '\n' ' ')
for want in hello.txt sub empty binary.bin etc-link; do
    case " $names " in *" $want "*) ;; *) fail "fs.list of $TD lacks $want: $names" ;; esac
done
[ "$(printf '%s' "$OUT" | jq -r '.entries[] | select(.name=="sub") | .is_dir')" = true ] ||
    fail "sub is not listed as a directory: $OUT"
ok strata-ctl ls "$TD/empty"
[ "$(printf '%s' "$OUT" | jq -c .entries)" = "[]" ] || fail "empty directory must list as []: $OUT"

ok strata-ctl stat "$TD/hello.txt"
[ "$(jget "$OUT" .size)" = 13 ] || fail "stat size: $OUT"

ok strata-ctl cat "$TD/hello.txt"
[ "$OUT" = "hello strata" ] || fail "cat hello.txt gave '$OUT'"
ok strata-ctl cat "$TD/inner-link"
[ "$OUT" = "nested file" ] || fail "cat through a symlink inside the prefix gave '$OUT'"
# A file larger than one read (fs.read is at most 128 KiB a call).
big=$(strata-ctl cat "$TD/big.txt" | wc -c)
[ "$big" = 307200 ] || fail "cat big.txt returned $big bytes, want 307200"
# Binary content survives (data_b64).
strata-ctl cat "$TD/binary.bin" | cmp -s - "$TD/binary.bin" || fail "binary.bin came back altered"

# Raw protocol: open, then read the handle.
ok strata-ctl fs.open "{\"path\":\"$TD/hello.txt\"}"
handle=$(jget "$OUT" .result.handle)
ok strata-ctl fs.read "{\"handle\":\"$handle\",\"offset\":6,\"size\":6}"
[ "$(jget "$OUT" .result.data)" = strata ] || fail "fs.read at offset 6: $OUT"
[ "$(jget "$OUT" .result.bytes_read)" = 6 ] || fail "fs.read bytes_read: $OUT"
log "issue, list, stat, open, read: ok"

# A token without the action: code 3.
ro=$(issue_token list "$TD")
expect_rc 13 env STRATA_TOKEN="$ro" strata-ctl cat "$TD/hello.txt"
# Another capability may not read our handle: code 3.
other=$(issue_token open,read "$TD")
expect_rc 13 strata-ctl --token "$other" fs.read "{\"handle\":\"$handle\"}"
# A token for another node's fs: code 3, named, with the audiences fs accepts.
ok strata-ctl identity.issue "{\"service\":\"fs\",\"actions\":[\"list\"],\"path_prefix\":\"$TD\",\"aud\":\"fs@other-node\"}"
elsewhere=$(jget "$OUT" .result.token)
expect_rc 13 env STRATA_TOKEN="$elsewhere" strata-ctl fs.list "{\"path\":\"$TD\"}"
[ "$(jget "$OUT" .error.name)" = PERMISSION_DENIED ] &&
    [ "$(jget "$OUT" '.error.details.accepted[1]')" = "fs@$node" ] ||
    fail "a token for fs@other-node: $OUT"
# No token at all: code 2.
expect_rc 12 env -u STRATA_TOKEN strata-ctl ls "$TD"
# Garbage token: code 2.
expect_rc 12 strata-ctl --token v2.public.AAAA ls "$TD"

ok strata-ctl revoke "$cap"
[ "$(jget "$OUT" .status)" = revoked ] || fail "revoke: $OUT"
# Revocation reaches fs within 100 ms (long poll); allow a little slack.
sleep 0.5
expect_rc 12 strata-ctl ls "$TD"
[ "$(error_code "$(strata-ctl fs.list "{\"path\":\"$TD\"}" || true)")" = 2 ] ||
    fail "revoked token: raw answer is not code 2"
expect_rc 12 strata-ctl fs.read "{\"handle\":\"$handle\"}"
expect_rc 12 strata-ctl cat "$TD/hello.txt"
ok strata-ctl verify "$tok"
[ "$(jget "$OUT" .revoked)" = true ] && [ "$(jget "$OUT" .valid)" = false ] ||
    fail "verify after revoke: $OUT"
# Revoking twice is not an error.
ok strata-ctl revoke "$cap"
# Other tokens are unaffected.
ok env STRATA_TOKEN="$other" strata-ctl cat "$TD/hello.txt"
log "revoked token refused with code 2 (also on its open handle)"
pass
