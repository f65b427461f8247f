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
left=$(systemctl list-units --all --no-legend --plain 'strata*' |
    awk '$3 != "inactive" { print $1 "=" $3 "/" $4 }')
[ -z "$left" ] || fail "still running after stopping strata.target: $left"
for n in identity fs supervisor; do
    [ ! -S "$STRATA_RUNTIME_DIR/$n.sock" ] || fail "$STRATA_RUNTIME_DIR/$n.sock still exists"
done
# Nothing answers any more.
expect_rc 1 strata-ctl health supervisor
log "every strata unit is inactive"

# And it comes back.
systemctl start strata.target
ok strata-ctl ls "$TD"
systemctl stop strata.target
pass
