#!/usr/bin/env bash
# The prototype v0.3.2's calls against Strata under systemd (docs/compat.md),
# through strata-v032, a client written from v0.3.2's api/protocol.md alone
# — and, when scripts/container-test.sh was given --prototype-ctl, through
# the prototype's own strata-ctl too, with the transcript printed:
# identity.issue with rights and rate_limit, identity.introspect,
# supervisor.status and svc.list, registry.resolve/list/register, a
# rate-limited token hitting code 7, a delegated child, and error names.
. "$(dirname "$0")/lib.sh"

CLIENTS=(strata-v032)
PROTO=/opt/strata-prototype/strata-ctl
[ -x "$PROTO" ] && CLIENTS+=(prototype)
command -v strata-v032 >/dev/null || fail "strata-v032 is not in PATH"

# v032 CLIENT METHOD PARAMS [TOKEN]: one call; the response as one JSON line
# in $OUT (both clients print the whole response, error or not).
v032() {
    local client=$1 method=$2 params=$3 token=${4:-}
    if [ "$client" = prototype ]; then
        if [ -n "$token" ]; then
            run "$PROTO" -token "$token" "$method" "$params"
        else
            run "$PROTO" "$method" "$params"
        fi
    else
        if [ -n "$token" ]; then
            STRATA_TOKEN=$token run strata-v032 "${method%%.*}" "$method" "$params"
        else
            run env -u STRATA_TOKEN strata-v032 "${method%%.*}" "$method" "$params"
        fi
    fi
    OUT=$(printf '%s' "$OUT" | jq -c . 2>/dev/null) || fail "$client $method: not JSON: $OUT $ERR"
    [ -n "$OUT" ] || fail "$client $method: no response (rc $RC): $ERR"
    [ "$client" != prototype ] || log "transcript: strata-ctl${token:+ -token …} $method '$params' → $OUT"
}
want() { # JQ-FILTER WHAT: $OUT must satisfy the filter
    printf '%s' "$OUT" | jq -e "$1" >/dev/null || fail "$2: $OUT"
}

fresh_start
make_testdata
wait_synced "start"

for c in "${CLIENTS[@]}"; do
    log "--- client: $c"
    v032 "$c" supervisor.status '{}'
    want '.ok and (.result.node_id | type == "string" and length > 0) and (.result.uptime_sec | type == "number")' "supervisor.status has node_id and uptime_sec"
    v032 "$c" supervisor.svc.list '{}'
    want '.ok and ([.result.services[].name] | index("identity") != null and index("fs") != null)' "svc.list names identity and fs"
    v032 "$c" registry.resolve '{"service":"fs"}'
    want '.ok and .result.endpoint == "unix://'"$STRATA_RUNTIME_DIR"'/fs.sock" and .result.api_v == 1' "registry.resolve fs"
    v032 "$c" registry.list '{}'
    want '.ok and ([.result.services[].service] | index("identity") != null)' "registry.list"
    v032 "$c" registry.register '{"service":"x","endpoint":"unix:///tmp/x.sock","api_v":1}'
    want '(.ok | not) and .error.code == 3 and .error.name == "PERMISSION_DENIED"' "registry.register is refused"

    # issue with rights and a rate limit (root is an administrator).
    v032 "$c" identity.issue '{"service":"fs","rights":["fs.list","fs.stat","fs.delegate"],"path_prefix":"'"$TD"'","ttl_seconds":600,"rate_limit":"5rps"}'
    want '.ok and (.result.token | startswith("v2.public."))' "identity.issue with rights and rate_limit"
    TOKEN=$(printf '%s' "$OUT" | jq -r .result.token)
    v032 "$c" identity.introspect '{"token":"'"$TOKEN"'"}'
    want '.ok and .result.valid == true and .result.revoked == false and (.result.claims.rights | index("fs.list") != null) and .result.claims.constraints.rate_limit == "5rps"' "identity.introspect"

    v032 "$c" fs.list '{"path":"'"$TD"'"}' "$TOKEN"
    want '.ok and ([.result.entries[].name] | index("hello.txt") != null)' "fs.list with the rights-only token"
    v032 "$c" fs.list '{"path":"/etc"}' "$TOKEN"
    want '.error.code == 3 and .error.name == "PERMISSION_DENIED"' "fs.list outside the prefix"

    # Past 5 requests a second: code 7, RESOURCE_EXHAUSTED.
    hit=""
    for _ in $(seq 1 30); do
        v032 "$c" fs.stat '{"path":"'"$TD"'"}' "$TOKEN"
        if printf '%s' "$OUT" | jq -e '.error.code == 7' >/dev/null; then hit=$OUT; break; fi
    done
    [ -n "$hit" ] || fail "30 quick fs.stat never hit the 5rps limit"
    OUT=$hit
    want '.error.name == "RESOURCE_EXHAUSTED"' "code 7 is RESOURCE_EXHAUSTED"
    log "rate limit: $(printf '%s' "$hit" | jq -c .error)"
    sleep 1.2

    # A delegated child, narrower; wider is refused with the reason.
    v032 "$c" identity.delegate '{"rights":["fs.list"],"path_prefix":"'"$TD"'/sub","ttl_seconds":60}' "$TOKEN"
    want '.ok and (.result.chain | length == 1)' "identity.delegate"
    CHILD=$(printf '%s' "$OUT" | jq -r .result.token)
    v032 "$c" fs.list '{"path":"'"$TD"'/sub"}' "$CHILD"
    want '.ok' "the child lists its narrower prefix"
    v032 "$c" fs.list '{"path":"'"$TD"'"}' "$CHILD"
    want '.error.code == 3' "the child cannot list its parent's prefix"
    v032 "$c" identity.delegate '{"path_prefix":"/srv"}' "$TOKEN"
    want '.error.code == 3 and (.error.message | contains("wider than its parent"))' "a wider child is refused"

    # Every error carries its name.
    v032 "$c" fs.list '{"path":"'"$TD"'"}' "not-a-token"
    want '.error.code == 2 and .error.name == "UNAUTHENTICATED"' "a bad token is UNAUTHENTICATED"
done
pass
