#!/usr/bin/env bash
# A SIGSTOP'd identity stops sending WATCHDOG=1; systemd kills it after
# WatchdogSec= and Restart=on-failure starts a new one (new MainPID, NRestarts
# up by one). Calls work again afterwards.
. "$(dirname "$0")/lib.sh"

fresh_start
ok strata-ctl health identity
pid=$(prop strata-identity.service MainPID)
n0=$(prop strata-identity.service NRestarts)
wd=$(prop strata-identity.service WatchdogUSec)
log "identity pid $pid, NRestarts $n0, WatchdogUSec $wd; sending SIGSTOP"
[ "$wd" != 0 ] && [ -n "$wd" ] || fail "strata-identity.service has no watchdog (WatchdogUSec=$wd)"
kill -STOP "$pid"

restarted() {
    local p
    p=$(prop strata-identity.service MainPID)
    [ "$(prop strata-identity.service NRestarts)" -gt "$n0" ] && [ "$p" -gt 0 ] && [ "$p" != "$pid" ]
}
# WatchdogSec=10s, then the abort, then the restart: 40 s is generous.
if ! (wait_until 40 "identity restarted by the watchdog" restarted); then
    kill -CONT "$pid" 2>/dev/null || true
    fail "identity not restarted within 40 s of SIGSTOP (MainPID $(prop strata-identity.service MainPID), NRestarts $(prop strata-identity.service NRestarts), result $(prop strata-identity.service Result))"
fi
log "restarted: pid $(prop strata-identity.service MainPID), NRestarts $(prop strata-identity.service NRestarts)"
ok strata-ctl health identity
[ "$(jget "$OUT" .status)" = ok ] || fail "identity.health after watchdog restart: $OUT"
pass
