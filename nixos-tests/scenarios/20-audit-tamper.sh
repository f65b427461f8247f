#!/usr/bin/env bash
# fs's audit trail is tamper-evident (docs/audit.md): `strata-ctl audit
# verify` passes on the trails as fs and identity wrote them and prints
# their head hashes; one byte of one record changed in place (the uid of a
# denial: 0 becomes 1) makes it exit 3 naming that file and line; the byte
# put back, it passes again with the same head.
. "$(dirname "$0")/lib.sh"

TRAIL=/var/log/strata/fs
FILE=$TRAIL/audit.jsonl

fresh_start
make_testdata
ISSUED=$(strata-ctl issue --service fs --actions open,read,list --path-prefix "$TD" --ttl 600)
STRATA_TOKEN=$(jget "$ISSUED" .token)
export STRATA_TOKEN
ok strata-ctl ls "$TD"
ok strata-ctl cat "$TD/hello.txt"
DENIED=/etc/strata-tamper-$$-$RANDOM
expect_rc 13 strata-ctl cat "$DENIED"
# fs writes nothing more while the file is edited.
systemctl stop strata-fs.service

run strata-ctl audit verify
[ "$RC" = 0 ] || fail "strata-ctl audit verify on the untouched trails: exit $RC: $OUT $ERR"
HEAD=$(printf '%s\n' "$OUT" | grep "^head: $TRAIL ") || fail "no head line for $TRAIL in: $OUT"
log "before: $HEAD"
# identity's trail too (DynamicUser=: /var/log/private, through a symlink).
ID_HEAD=$(printf '%s\n' "$OUT" | grep "^head: /var/log/strata/identity ") ||
    fail "no head line for identity's trail in: $OUT"
log "identity: $ID_HEAD"

# The denial's record: its line number and the byte offset of its uid.
LINE=$(grep -n -F "\"path\":\"$DENIED\"" "$FILE" | tail -n 1 | cut -d: -f1)
[ -n "$LINE" ] || fail "no record of the denial of $DENIED in $FILE"
START=$(head -n $((LINE - 1)) "$FILE" | wc -c)
COL=$(sed -n "${LINE}p" "$FILE" | awk '{ print index($0, "\"uid\":0,") }')
[ "$COL" -gt 0 ] || fail "the denial's record has no \"uid\":0: $(sed -n "${LINE}p" "$FILE")"
POS=$((START + COL - 1 + 6))
# In place (same inode, same length): what an intruder covering tracks does.
printf 1 | dd of="$FILE" bs=1 seek="$POS" count=1 conv=notrunc status=none
sed -n "${LINE}p" "$FILE" | grep -q '"uid":1,' || fail "the edit did not land"

expect_rc 3 strata-ctl audit verify "$TRAIL"
case $ERR in
    *"chain broken at $FILE line $LINE: "*"the record was edited"*) ;;
    *) fail "verify should name $FILE line $LINE as edited; stderr: $ERR" ;;
esac
log "after the edit: $(printf '%s\n' "$ERR" | head -n 1)"
# The default trails are checked too, and the same record named.
expect_rc 3 strata-ctl audit verify
case $ERR in *"$FILE line $LINE:"*) ;; *) fail "verify without PATH: $ERR" ;; esac

printf 0 | dd of="$FILE" bs=1 seek="$POS" count=1 conv=notrunc status=none
run strata-ctl audit verify
[ "$RC" = 0 ] || fail "the byte put back, verify should pass: exit $RC: $OUT $ERR"
printf '%s\n' "$OUT" | grep -qxF "$HEAD" || fail "the head changed: want $HEAD in $OUT"
pass
