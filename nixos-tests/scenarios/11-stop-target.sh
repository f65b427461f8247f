#!/usr/bin/env bash
# `systemctl stop strata.target` stops every strata unit: sockets,
# supervisor, and the on-demand services that were started.
. "$(dirname "$0")/lib.sh"

fresh_start
make_testdata
STRATA_TOKEN=$(issue_token list "$TD")
export STRATA_TOKEN
ok strata-ctl ls "$TD"
for u in $UNITS_SERVICES $UNITS_SOCKETS; do
    [ "$(active_state "$u")" = active ] || fail "$u not active before the stop"
done

systemctl stop strata.target
# `systemctl stop` returns when the target's own job is done; the target is
# ordered after its members, so it stops first and their stop jobs finish
# after it. Give them the time a graceful stop may take (TimeoutStopSec=15s).
still_running() {
    systemctl list-units --all --no-legend --plain 'strata*' |
        awk '$3 != "inactive" && $3 != "failed" { print $1 "=" $3 "/" $4 }'
}
all_stopped() { [ -z "$(still_running)" ]; }
t0=$(date +%s)
if ! (wait_until 20 "every strata unit inactive" all_stopped); then
    fail "still running 20 s after stopping strata.target: $(still_running | tr '\n' ' ')"
fi
log "all strata units inactive $(( $(date +%s) - t0 )) s after 'systemctl stop strata.target' returned"
failed=$(systemctl list-units --all --no-legend --plain --state=failed 'strata*')
[ -z "$failed" ] || fail "units failed while stopping: $failed"
for n in identity fs supervisor; do
    [ ! -S "$STRATA_RUNTIME_DIR/$n.sock" ] || fail "$STRATA_RUNTIME_DIR/$n.sock still exists"
done
# Nothing answers any more.
expect_rc 1 strata-ctl health supervisor
log "every strata unit is inactive"

# And it comes back.
systemctl start strata.target
ok strata-ctl ls "$TD"
stop_all
pass
