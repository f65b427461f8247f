#!/usr/bin/env bash
# Runs INSIDE a node (installed as /opt/strata-fleet/poll.sh by
# scripts/fleet-test.sh; started by lib.sh's poll_start). Asks fs.stat of
# POLL_PATH with $STRATA_TOKEN every few milliseconds and reports when the
# answer changes, timed on the node's clock (the containers share the
# host's kernel, hence its clock, so times compare across nodes):
#   first <ms>             the exit status was POLL_FIRST (once)
#   <ms> <rc> <answer>     then the exit status was POLL_WANT: exit 0
#   unexpected <ms> <rc> <answer>   any other status: exit 3
#   timeout <rc> <answer>  POLL_TIMEOUT_MS went by: exit 1
# Exit statuses are strata-ctl's: 0 served, 12 code 2, 16 code 6.
set -u
: "${STRATA_TOKEN:?}" "${POLL_PATH:?}" "${POLL_FIRST:?}" "${POLL_WANT:?}"
timeout_ms=${POLL_TIMEOUT_MS:-10000}
interval=${POLL_INTERVAL:-0.003}
deadline=$(($(date +%s%3N) + timeout_ms))
params="{\"path\":\"$POLL_PATH\"}"
seen_first=0
while :; do
    out=$(strata-ctl fs.stat "$params" 2>&1)
    rc=$?
    t=$(date +%s%3N)
    if [ "$seen_first" = 0 ]; then
        if [ "$rc" = "$POLL_FIRST" ]; then
            echo "first $t"
            seen_first=1
        else
            echo "unexpected $t $rc $out"
            exit 3
        fi
    elif [ "$rc" = "$POLL_WANT" ]; then
        echo "$t $rc $out"
        exit 0
    elif [ "$rc" != "$POLL_FIRST" ]; then
        echo "unexpected $t $rc $out"
        exit 3
    fi
    if [ "$t" -ge "$deadline" ]; then
        echo "timeout $rc $out"
        exit 1
    fi
    sleep "$interval"
done
