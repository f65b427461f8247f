#!/usr/bin/env bash
# SIGKILL strata-fs.service: the socket stays with systemd, so the next call
# is served by a new fs process (restart or re-activation), with the same
# token.
. "$(dirname "$0")/lib.sh"

fresh_start
make_testdata
STRATA_TOKEN=$(issue_token open,read,list "$TD")
export STRATA_TOKEN
ok strata-ctl cat "$TD/hello.txt"
pid1=$(prop strata-fs.service MainPID)
[ "$pid1" -gt 0 ] || fail "fs has no MainPID after a call"

for round in 1 2; do
    log "round $round: systemctl kill -s KILL strata-fs.service (pid $pid1)"
    systemctl kill -s KILL strata-fs.service
    # Call right away: the connection waits in the socket's backlog until a
    # new fs takes it.
    ok strata-ctl cat "$TD/hello.txt"
    [ "$OUT" = "hello strata" ] || fail "after kill: cat gave '$OUT'"
    pid2=$(prop strata-fs.service MainPID)
    [ "$pid2" -gt 0 ] && [ "$pid2" != "$pid1" ] || fail "fs MainPID $pid1 -> $pid2: no new process"
    pid1=$pid2
done
[ "$(active_state strata-fs.service)" = active ] || fail "fs not active at the end"
log "NRestarts=$(prop strata-fs.service NRestarts)"
pass
