#!/usr/bin/env bash
# Issue 10, defect 2: one local user holding every connection it can get
# must not lock out other users, stop an administrator's revocation, or
# make the supervisor restart the services. Under the units as installed
# (STRATA_MAX_CONNECTIONS_PER_UID=64, 32 reserved connections):
#  - the user holds 64 connections to identity and 64 to fs, then gets
#    code 6, and its own next strata-ctl is refused (exit 16);
#  - a second user is served meanwhile;
#  - root revokes the first user's capability, and fs refuses its token;
#  - over more than threshold x interval of the supervisor, both services
#    stay up under the same main PID, and nothing is restarted.
. "$(dirname "$0")/lib.sh"
command -v strata-loadgen >/dev/null 2>&1 || fail "strata-loadgen is not in PATH ($PATH)"

HOLD_SECS=45
WORK=$(mktemp -d)
chmod 0777 "$WORK"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
OTHER_USER=strata-test-b
for u in "$STRATA_TEST_USER" "$OTHER_USER"; do
    if ! id "$u" >/dev/null 2>&1; then
        log "creating user $u"
        useradd --system --no-create-home --shell /bin/sh "$u"
    fi
done

fresh_start
make_testdata
wait_synced "before the hold"
tok=$(issue_token open,read,list "$TD")
cap=$(cap_id_of "$tok")
tok_b=$(issue_token open,read "$TD")
pid_id=$(prop strata-identity.service MainPID)
pid_fs=$(prop strata-fs.service MainPID)
[ "$pid_id" != 0 ] && [ "$pid_fs" != 0 ] || fail "services not running: identity $pid_id, fs $pid_fs"

unset STRATA_TOKEN
for svc in identity fs; do
    as_user "$STRATA_TEST_USER" strata-loadgen hold --service "$svc" --conns 1000 \
        --seconds "$HOLD_SECS" --ready-file "$WORK/$svc.json" >"$WORK/$svc.out" 2>&1 &
done
# held SVC: the hold on SVC is in place; fails at once, with its output,
# if the hold itself ended in an error.
held() {
    test -s "$WORK/$1.json" && return 0
    [ -s "$WORK/$1.out" ] && fail "the hold on $1 failed: $(cat "$WORK/$1.out")"
    return 1
}
for svc in identity fs; do
    wait_until 30 "$STRATA_TEST_USER holding $svc's connections" held "$svc"
    summary=$(cat "$WORK/$svc.json")
    [ "$(jget "$summary" .held)" = 64 ] || fail "$svc: expected 64 connections held, got $summary"
    [ "$(jget "$summary" .refused.code)" = 6 ] || fail "$svc: expected code 6 past the cap, got $summary"
    case $(jget "$summary" .refused.message) in
        *"per uid"*) ;;
        *) fail "$svc: the refusal does not name the per-uid cap: $summary" ;;
    esac
    log "$svc: $STRATA_TEST_USER holds 64 connections, then: $(jget "$summary" .refused.message)"
done

STRATA_TOKEN=$tok expect_rc 16 as_user "$STRATA_TEST_USER" strata-ctl cat "$TD/hello.txt"
STRATA_TOKEN=$tok_b ok as_user "$OTHER_USER" strata-ctl cat "$TD/hello.txt"
[ "$OUT" = "hello strata" ] || fail "$OTHER_USER read '$OUT'"
log "$OTHER_USER is served while $STRATA_TEST_USER holds its cap"

ok strata-ctl revoke "$cap"
[ "$(jget "$OUT" .status)" = revoked ] || fail "revoke: $OUT"
STRATA_TOKEN=$tok expect_rc 12 strata-ctl cat "$TD/hello.txt"
log "root revoked $STRATA_TEST_USER's capability; fs refuses its token"

# The supervisor probes every 5 s and restarts after 3 failed probes: wait
# out four rounds with the connections still held.
interval=$(systemctl show -p Environment --value strata-supervisor.service |
    tr ' ' '\n' | sed -n 's/^STRATA_SUPERVISOR_INTERVAL_SECS=//p')
threshold=$(systemctl show -p Environment --value strata-supervisor.service |
    tr ' ' '\n' | sed -n 's/^STRATA_SUPERVISOR_FAILURE_THRESHOLD=//p')
wait_secs=$(( ${interval:-5} * (${threshold:-3} + 1) ))
log "waiting ${wait_secs} s: $threshold supervisor rounds and one more"
sleep "$wait_secs"
[ -s "$WORK/fs.out" ] && fail "the hold ended before the supervisor was checked: $(cat "$WORK/fs.out")"
ok strata-ctl status
for svc in identity fs; do
    st=$(jget "$OUT" ".services.$svc.state")
    restarts=$(jget "$OUT" ".services.$svc.restarts")
    [ "$st" = healthy ] || fail "$svc is $st while one user holds its cap: $OUT"
    [ "$restarts" = 0 ] || fail "the supervisor restarted $svc $restarts time(s): $OUT"
done
[ "$(prop strata-identity.service MainPID)" = "$pid_id" ] || fail "identity was restarted"
[ "$(prop strata-fs.service MainPID)" = "$pid_fs" ] || fail "fs was restarted"
log "after ${wait_secs} s: both healthy, same main PIDs, no restart"
pass
