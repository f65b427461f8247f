#!/usr/bin/env bash
# supervisor.status reports identity and fs healthy once they run.
. "$(dirname "$0")/lib.sh"

fresh_start
make_testdata
ok strata-ctl supervisor.health
# Make both run: a token (identity) and a read (fs).
STRATA_TOKEN=$(issue_token list "$TD")
export STRATA_TOKEN
ok strata-ctl ls "$TD"

both_healthy() {
    local out
    out=$(strata-ctl status) || return 1
    [ "$(printf '%s' "$out" | jq -r .services.identity.state)" = healthy ] &&
        [ "$(printf '%s' "$out" | jq -r .services.fs.state)" = healthy ]
}
# One check interval is 5 s; allow three.
if ! (wait_until 20 "supervisor reports identity and fs healthy" both_healthy); then
    fail "supervisor.status: $(strata-ctl status 2>&1)"
fi
ok strata-ctl status
log "status: $OUT"
for n in identity fs; do
    lo=$(jget "$OUT" ".services.$n.last_ok")
    [ "$lo" != null ] || fail "$n healthy but last_ok is null"
done
ok strata-ctl health supervisor
pass
