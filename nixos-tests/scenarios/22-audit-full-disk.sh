#!/usr/bin/env bash
# fs never serves unaudited (docs/audit.md): with its audit trail on a full
# file system (a 256 KiB tmpfs mounted on /var/log/strata/fs, then filled),
#  - a request is refused with code 5 (strata-ctl exits 15), and so is a
#    read through a handle opened before (reads write no record of their
#    own, so they must not slip through);
#  - fs.health says status "degraded", audit "failing" and why, and
#    `strata-ctl status` shows fs unhealthy with that reason (and the
#    supervisor does not restart it for it);
# and once space is freed the next request is served, fs.health is "ok"
# again, and the trail says how many records were refused meanwhile and
# still verifies.
. "$(dirname "$0")/lib.sh"
command -v mount >/dev/null || fail "mount is not in PATH"

TRAIL=/var/log/strata/fs
WORK=$(mktemp -d)
cleanup() {
    systemctl stop strata-fs.service 2>/dev/null || true
    umount "$TRAIL" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

fresh_start
make_testdata
TOKEN=$(issue_token open,read,list "$TD")
export STRATA_TOKEN=$TOKEN
systemctl stop strata-fs.service
mkdir -p "$TRAIL"
mount -t tmpfs -o size=256k,mode=0700 strata-audit-test "$TRAIL" ||
    fail "cannot mount a tmpfs on $TRAIL"
ok strata-ctl ls "$TD"
wait_synced "fs on a small trail"
ok strata-ctl fs.open "{\"path\":\"$TD/hello.txt\"}"
handle=$(jget "$OUT" .result.handle)
ok strata-ctl fs.read "{\"handle\":\"$handle\",\"size\":5}"
# Fill it: dd stops at ENOSPC.
dd if=/dev/zero of="$TRAIL/filler" bs=4k status=none 2>/dev/null || true
log "trail file system: $(df -h --output=used,avail "$TRAIL" | tail -n 1)"

# The file's last page may still have room for a few records, as on any
# file system: the first request whose record does not fit is refused.
for _ in $(seq 60); do
    run strata-ctl ls "$TD"
    [ "$RC" != 0 ] && break
done
[ "$RC" = 15 ] || fail "with the trail's file system full, expected exit 15 from strata-ctl ls, got $RC: $OUT $ERR"
case $ERR in *"audit trail"*) ;; *) fail "the code 5 message should name the audit trail: $ERR" ;; esac
H=$(strata-ctl health fs)
[ "$(jget "$H" .status)" = degraded ] && [ "$(jget "$H" .audit)" = failing ] ||
    fail "fs.health should say degraded and failing: $H"
case $(jget "$H" .audit_error) in *"No space left"*) ;; *) fail "audit_error: $H" ;; esac
log "fs.health: $(printf '%s' "$H" | jq -c '{status, audit, audit_error}')"
expect_rc 15 strata-ctl ls "$TD"
run strata-ctl fs.read "{\"handle\":\"$handle\",\"size\":5}"
[ "$(jget "$OUT" .error.code)" = 5 ] ||
    fail "a read through an open handle was served while the trail is full: $OUT"
log "a read through a handle opened before is refused too: $(jget "$OUT" .error.message)"

fs_refusing() {
    strata-ctl status | jq -e '.services.fs | .state == "unhealthy" and (.detail | contains("audit trail"))'
}
wait_until 40 "strata-ctl status to show fs refusing for its audit trail" fs_refusing
log "strata-ctl status: $(strata-ctl status | jq -c .services.fs)"
[ "$(strata-ctl status | jq -r .services.fs.restarts)" = 0 ] || fail "the supervisor restarted fs for a full disk"

# Space again: served, healthy, and the gap is in the trail.
rm -f "$TRAIL/filler"
ok strata-ctl ls "$TD"
H=$(strata-ctl health fs)
[ "$(jget "$H" .status)" = ok ] && [ "$(jget "$H" .audit)" = ok ] || fail "fs.health after space was freed: $H"
# grep, not jq: a record cut short by the full disk is a line of its own.
RESUMED=$(grep -F '"event":"resumed"' "$TRAIL/audit.jsonl" | tail -n 1) || true
[ -n "$RESUMED" ] || fail "no resumed event in the trail"
[ "$(jget "$RESUMED" .refused)" -ge 2 ] || fail "the resumed event should count the refused records: $RESUMED"
log "resumed: $RESUMED"
systemctl stop strata-fs.service
run strata-ctl audit verify "$TRAIL"
[ "$RC" = 0 ] || fail "strata-ctl audit verify $TRAIL after the outage: exit $RC: $OUT $ERR"
pass
