# shellcheck shell=bash
# Common helpers for the Strata scenarios. Sourced, never run.
#
# The scenarios run INSIDE the machine under test, as root: the Debian
# container of scripts/container-test.sh and the NixOS VM tests run the very
# same files. So: no distribution-specific paths; strata-ctl, systemctl,
# systemd-analyze, jq, useradd and runuser are taken from PATH.
#
# Conventions: every check that fails calls `fail` with a message saying
# what was expected and what came instead, and the script exits non-zero.

set -euo pipefail

SCENARIO=$(basename "$0" .sh)
STRATA_RUNTIME_DIR=${STRATA_RUNTIME_DIR:-/run/strata}
export STRATA_RUNTIME_DIR
# Test data, created by `make_testdata`. A sibling prefix (strata-test2) and
# symlinks pointing out of the prefix are part of it.
TD=/srv/strata-test
TD2=/srv/strata-test2
# The unprivileged user of the non-admin scenario (the NixOS test may
# provide one of its own through this variable).
STRATA_TEST_USER=${STRATA_TEST_USER:-strata-test}

UNITS_SERVICES="strata-identity.service strata-fs.service strata-supervisor.service"
UNITS_SOCKETS="strata-identity.socket strata-identity-credentials.socket strata-fs.socket strata-supervisor.socket strata-registry.socket"

log() { printf '[%s] %s\n' "$SCENARIO" "$*"; }
fail() {
    printf '[%s] FAIL: %s\n' "$SCENARIO" "$*" >&2
    exit 1
}
pass() { printf '[%s] OK\n' "$SCENARIO"; }

for tool in strata-ctl systemctl jq; do
    command -v "$tool" >/dev/null 2>&1 || fail "$tool is not in PATH ($PATH)"
done

# run, expect_rc, ok, jget, wait_until: shared with the fleet scenarios.
# shellcheck source=nixos-tests/scenarios/checks.sh
. "$(dirname "${BASH_SOURCE[0]}")/checks.sh"

# The error code of a raw strata-ctl answer, e.g. {"ok":false,"error":{"code":3}}.
error_code() { printf '%s' "$1" | jq -r '.error.code // empty' 2>/dev/null; }

prop() { systemctl show -p "$2" --value "$1"; }
active_state() { prop "$1" ActiveState; }

is_state() { [ "$(active_state "$1")" = "$2" ]; }

# Stop every strata unit and wait until none is active any more (naming
# them all makes systemctl wait for each stop job, not only the target's).
stop_all() {
    # shellcheck disable=SC2086 # word lists on purpose
    systemctl stop strata.target $UNITS_SERVICES $UNITS_SOCKETS 2>/dev/null || true
    systemctl reset-failed 'strata*' 2>/dev/null || true
}

# Stop everything and start strata.target afresh: each scenario begins with
# the sockets listening, the supervisor running, identity and fs not
# started, and no start-rate-limit counters left over from an earlier one.
fresh_start() {
    stop_all
    systemctl start strata.target
    wait_until 30 "strata-supervisor.service active" unit_up strata-supervisor.service
}

# unit_up UNIT: true once active; aborts the scenario at once if the unit
# failed (no point waiting out a timeout on a crash loop).
unit_up() {
    local st
    st=$(active_state "$1")
    case $st in
        active) return 0 ;;
        failed) fail "$1 failed: $(prop "$1" Result); see its journal" ;;
        *) return 1 ;;
    esac
}

# wait_synced WHAT: fs verifies tokens with identity's public key, which a freshly started fs
# fetches from identity (itself perhaps still starting). fs.health says
# whether it has: wait for "synced" before judging tokens, and say how long
# it took (a long wait is worth a look even when the scenario passes).
wait_synced() {
    local t0 i=0
    t0=$(date +%s)
    until [ "$(strata-ctl health fs 2>/dev/null | jq -r .identity)" = synced ]; do
        i=$((i + 1))
        [ "$i" -le 100 ] || fail "$1: fs not synced with identity after 20 s: $(strata-ctl health fs 2>&1)"
        sleep 0.2
    done
    log "$1: fs synced with identity after $(( $(date +%s) - t0 )) s"
}

# trail_head_seq DIR: the seq of the last record of the audit trail in DIR
# (0 when there is none yet), to tell a scenario's records from earlier ones.
trail_head_seq() {
    local seq
    seq=$(tail -n 1 "$1/audit.jsonl" 2>/dev/null | jq -r '.seq // 0' 2>/dev/null) || seq=0
    printf '%s\n' "${seq:-0}"
}

# trail_records DIR SEQ: the records of the audit trail in DIR (rotated
# files, then audit.jsonl) whose seq is above SEQ, one JSON object a line.
trail_records() {
    local f
    [ -s "$1/audit.jsonl" ] || fail "no audit trail in $1: $(ls -la "$1" 2>&1)"
    for f in "$1"/audit-*.jsonl "$1/audit.jsonl"; do
        if [ -f "$f" ]; then cat "$f"; fi
    done | jq -c --argjson s "$2" 'select(.seq > $s)'
}

# Test data: world-readable (fs runs as the static user strata-fs, which
# reads what every user may read), with escapes that fs must refuse.
make_testdata() {
    rm -rf "$TD" "$TD2"
    mkdir -p "$TD/sub" "$TD/empty" "$TD2"
    printf 'hello strata\n' >"$TD/hello.txt"
    printf 'nested file\n' >"$TD/sub/nested.txt"
    # 300 KiB so that a read in several pieces is needed.
    head -c 307200 /dev/zero | tr '\0' 'x' >"$TD/big.txt"
    # Not UTF-8: fs must return it as data_b64.
    printf '\377\376\000\001binary' >"$TD/binary.bin"
    printf 'sibling secret\n' >"$TD2/secret.txt"
    ln -s /etc "$TD/etc-link"                      # absolute, to a directory
    ln -s /etc/hostname "$TD/hostname-link"        # absolute, to a file
    ln -s ../strata-test2/secret.txt "$TD/sibling-link"  # relative, to the sibling
    ln -s sub/nested.txt "$TD/inner-link"          # stays inside: allowed
    chmod -R a+rX "$TD" "$TD2"
    chmod 0755 /srv
}

# issue_token ACTIONS PREFIX [TTL]: prints a token (as root, an admin).
issue_token() {
    strata-ctl issue --service fs --actions "$1" --path-prefix "$2" --ttl "${3:-600}" --quiet
}

# The cap_id (jti) of a token.
cap_id_of() {
    local out
    out=$(STRATA_TOKEN=$1 strata-ctl whoami) || fail "strata-ctl whoami failed for a token"
    jget "$out" .jti
}

# as_user USER CMD...: runs CMD as USER with a clean environment but
# STRATA_TOKEN passed through when set.
as_user() {
    local u=$1
    local envs=(STRATA_RUNTIME_DIR="$STRATA_RUNTIME_DIR" PATH="$PATH" HOME=/)
    shift
    if [ -n "${STRATA_TOKEN:-}" ]; then envs+=(STRATA_TOKEN="$STRATA_TOKEN"); fi
    runuser -u "$u" -- env -i "${envs[@]}" "$@"
}
