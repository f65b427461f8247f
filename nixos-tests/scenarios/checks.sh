# shellcheck shell=bash
# Checks shared by the single-node scenarios (lib.sh, run inside the machine
# under test) and the fleet scenarios (../fleet/lib.sh, run on the host).
# Sourced, never run; the sourcing file defines `fail`.

# run CMD...: runs a command, never aborts; its stdout lands in $OUT, its
# stderr in $ERR, its exit status in $RC.
run() {
    local errf
    errf=$(mktemp)
    set +e
    OUT=$("$@" 2>"$errf")
    RC=$?
    set -e
    ERR=$(cat "$errf")
    rm -f "$errf"
}

# expect_rc N CMD...: runs CMD and fails unless it exits with N. For
# strata-ctl: 0 ok, 10+code when the service answered an error (12 = code 2
# authentication required, 13 = code 3 permission denied, 14 = code 4 not
# found), 1 connection error, 2 usage error.
expect_rc() {
    local want=$1
    shift
    run "$@"
    if [ "$RC" != "$want" ]; then
        fail "expected exit $want from '$*', got $RC; stdout: ${OUT:-<empty>}; stderr: ${ERR:-<empty>}"
    fi
}

# ok CMD...: expect success.
ok() { expect_rc 0 "$@"; }

# jget JSON FILTER: one field of a JSON document (jq -r). Fails loudly when
# the text is not JSON or the field is absent or null; false is a value.
jget() {
    local v
    v=$(printf '%s' "$1" | jq -r "$2" 2>/dev/null) || fail "not JSON (or bad filter '$2'): $1"
    [ "$v" != null ] || fail "no '$2' in JSON: $1"
    printf '%s\n' "$v"
}

# wait_until SECONDS DESCRIPTION CMD...: polls CMD every 0.2 s.
wait_until() {
    local secs=$1 what=$2 i=0
    shift 2
    while ! "$@" >/dev/null 2>&1; do
        i=$((i + 1))
        [ "$i" -le $((secs * 5)) ] || fail "timed out after ${secs}s waiting for: $what"
        sleep 0.2
    done
}
