#!/usr/bin/env bash
# The supervisor's own remedy: when a running service fails its health
# checks STRATA_SUPERVISOR_FAILURE_THRESHOLD times in a row, the supervisor
# asks systemd to restart it. This is what proves that the supervisor's
# sandbox (root without capabilities, read-only, user namespace) still lets
# it run `systemctl restart`.
#
# systemd's watchdog would normally win that race (a hung service is killed
# after WatchdogSec=), so for this scenario a runtime drop-in switches fs's
# watchdog off and makes the supervisor check every second. Both drop-ins
# live in /run/systemd/system and are removed at the end.
. "$(dirname "$0")/lib.sh"

FS_DROPIN=/run/systemd/system/strata-fs.service.d/zz-strata-test.conf
SUP_DROPIN=/run/systemd/system/strata-supervisor.service.d/zz-strata-test.conf
cleanup() {
    [ -z "${stopped_pid:-}" ] || kill -CONT "$stopped_pid" 2>/dev/null || true
    rm -f "$FS_DROPIN" "$SUP_DROPIN"
    systemctl daemon-reload
}
trap cleanup EXIT

# Quiescent first: a daemon-reload while an earlier scenario's stop jobs
# are still running does not reliably apply new drop-ins to those units.
stop_all
mkdir -p "$(dirname "$FS_DROPIN")" "$(dirname "$SUP_DROPIN")"
printf '[Service]\nWatchdogSec=0\n' >"$FS_DROPIN"
printf '[Service]\nEnvironment=STRATA_SUPERVISOR_INTERVAL_SECS=1\nEnvironment=STRATA_SUPERVISOR_FAILURE_THRESHOLD=3\n' >"$SUP_DROPIN"
systemctl daemon-reload
wd=$(prop strata-fs.service WatchdogUSec)
case $wd in 0|0s|infinity) ;; *) fail "drop-in did not switch fs's watchdog off (WatchdogUSec=$wd)" ;; esac

fresh_start
ok strata-ctl health fs
healthy() { [ "$(strata-ctl status | jq -r .services.fs.state)" = healthy ]; }
wait_until 10 "supervisor sees fs healthy" healthy

stopped_pid=$(prop strata-fs.service MainPID)
log "SIGSTOP fs (pid $stopped_pid); the supervisor should restart it"
kill -STOP "$stopped_pid"
t0=$(date +%s)
replaced() {
    local p
    p=$(prop strata-fs.service MainPID)
    [ "$p" -gt 0 ] && [ "$p" != "$stopped_pid" ]
}
if ! (wait_until 45 "fs restarted by the supervisor" replaced); then
    fail "fs not restarted within 45 s; supervisor says: $(strata-ctl status 2>&1)"
fi
log "fs replaced after $(( $(date +%s) - t0 )) s (pid $(prop strata-fs.service MainPID))"
stopped_pid=""
ok strata-ctl status
restarts=$(jget "$OUT" .services.fs.restarts)
[ "$restarts" -ge 1 ] || fail "supervisor does not count its restart: $OUT"
ok strata-ctl health fs
pass
