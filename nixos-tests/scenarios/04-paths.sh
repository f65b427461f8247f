#!/usr/bin/env bash
# Paths outside the token's prefix are refused with code 3 (exit 13):
# plainly outside, a sibling prefix (/srv/strata-test2 is not under
# /srv/strata-test), `..`, and symlinks inside the prefix pointing out.
. "$(dirname "$0")/lib.sh"

fresh_start
make_testdata
STRATA_TOKEN=$(issue_token open,read,list,stat "$TD")
export STRATA_TOKEN

expect_rc 13 strata-ctl cat /etc/passwd
expect_rc 13 strata-ctl ls /srv
expect_rc 13 strata-ctl ls /
# Sibling prefix: component-wise comparison, not string prefix.
expect_rc 13 strata-ctl cat "$TD2/secret.txt"
expect_rc 13 strata-ctl ls "$TD2"
# `..` climbing out is refused by the kernel (RESOLVE_BENEATH).
expect_rc 13 strata-ctl cat "$TD/../strata-test2/secret.txt"
expect_rc 13 strata-ctl cat "$TD/sub/../../../etc/passwd"
log "outside, sibling and .. refused"

# Symlink escapes: absolute to a directory, absolute to a file, relative to
# the sibling. Refused whatever the method.
expect_rc 13 strata-ctl cat "$TD/etc-link/passwd"
expect_rc 13 strata-ctl ls "$TD/etc-link"
expect_rc 13 strata-ctl stat "$TD/etc-link/passwd"
expect_rc 13 strata-ctl cat "$TD/hostname-link"
expect_rc 13 strata-ctl cat "$TD/sibling-link"
run strata-ctl fs.open "{\"path\":\"$TD/sibling-link\"}"
[ "$(error_code "$OUT")" = 3 ] || fail "raw fs.open of a symlink escape: want code 3, got $OUT"
log "symlink escapes refused"

# Inside the prefix still works, and a missing file is code 4.
ok strata-ctl cat "$TD/sub/nested.txt"
ok strata-ctl cat "$TD/inner-link"
expect_rc 14 strata-ctl cat "$TD/does-not-exist"

# A token whose prefix is the sibling cannot see the first tree either.
STRATA_TOKEN=$(issue_token open,read,list "$TD2")
ok strata-ctl cat "$TD2/secret.txt"
expect_rc 13 strata-ctl cat "$TD/hello.txt"
# A prefix outside STRATA_FS_ROOTS (/srv) is refused even for an admin-issued
# token (issuing may succeed; using it may not).
if out=$(issue_token list /etc 2>/dev/null); then
    expect_rc 13 env STRATA_TOKEN="$out" strata-ctl ls /etc
fi
pass
