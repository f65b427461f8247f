#!/usr/bin/env bash
# Strata in two minutes: start identity and fs by hand (no systemd), then
# issue a capability, use it, watch it refused outside its prefix and after
# its revocation. Everything lives in a temporary directory that is removed
# at the end. Works as root and as a normal user (who is made the admin).
#
# Usage: cargo build --release --workspace && scripts/demo.sh
# Environment: STRATA_BIN_DIR  where the binaries are (default target/release)
#
# Exit status: 0 when every step behaved as shown, 1 otherwise.

set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
BIN=${STRATA_BIN_DIR:-$REPO/target/release}
for b in strata-identity strata-fs strata-ctl; do
    [ -x "$BIN/$b" ] || {
        echo "demo: $BIN/$b not found: run cargo build --release --workspace first" >&2
        exit 1
    }
done
export PATH="$BIN:$PATH"

if [ -t 1 ]; then B=$'\e[1m' G=$'\e[32m' R=$'\e[31m' N=$'\e[0m'; else B='' G='' R='' N=''; fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/strata-demo.XXXXXX")
PIDS=()

stop_services() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
}
trap 'stop_services; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

say() { printf '\n%s== %s%s\n' "$B" "$*" "$N"; }
fail() {
    printf '%sdemo: FAILED: %s%s\n' "$R" "$*" "$N" >&2
    for log in "$WORK"/*.log; do
        [ -s "$log" ] && { echo "--- $(basename "$log")" >&2; tail -n 20 "$log" >&2; }
    done
    exit 1
}

# shown ARGS...: the words as one would type them (JSON in single quotes).
shown() {
    local a out=
    for a in "$@"; do
        case $a in *[!A-Za-z0-9_./:=,-]*) a="'$a'" ;; esac
        out+=" $a"
    done
    printf '%s' "${out# }"
}

# ctl WANT ARGS...: shows `strata-ctl ARGS`, runs it, prints its stdout (also
# kept in $OUT) and then its stderr, and fails unless it exits with WANT.
ctl() {
    local want=$1 rc
    shift
    printf '%s$ strata-ctl %s%s\n' "$G" "$(shown "$@")" "$N"
    set +e
    OUT=$(strata-ctl "$@" 2>"$WORK/stderr")
    rc=$?
    set -e
    [ -z "$OUT" ] || printf '%s\n' "$OUT"
    cat "$WORK/stderr"
    [ "$rc" = "$want" ] || fail "strata-ctl $* exited $rc, expected $want"
    [ "$want" = 0 ] || printf '%s(exit %s, as expected)%s\n' "$B" "$rc" "$N"
}

# --- a private Strata: sockets, signing key and served tree under $WORK
export STRATA_RUNTIME_DIR=$WORK/run STRATA_STATE_DIR=$WORK/state
STRATA_ADMIN_UIDS=$(id -u)
export STRATA_FS_ROOTS=$WORK/srv STRATA_ADMIN_UIDS STRATA_LOG=info
DATA=$WORK/srv/data
mkdir -p "$STRATA_RUNTIME_DIR" "$STRATA_STATE_DIR" "$DATA/reports" "$WORK/srv/secret"
printf 'hello from strata\n' >"$DATA/hello.txt"
printf 'q3: all green\n' >"$DATA/reports/q3.txt"
printf 'the secret plans\n' >"$WORK/srv/secret/plans.txt"
ln -s ../secret/plans.txt "$DATA/shortcut" # a symlink that leads out of data/

say "Starting strata-identity and strata-fs (runtime dir $STRATA_RUNTIME_DIR)"
strata-identity 2>"$WORK/identity.log" &
PIDS+=($!)
strata-fs 2>"$WORK/fs.log" &
PIDS+=($!)
# up NAME: the service answers its health check (and fs has identity's key).
up() {
    local out
    out=$(strata-ctl health "$1" 2>/dev/null) || return 1
    [ "$1" != fs ] || case $out in *'"identity":"synced"'*) ;; *) return 1 ;; esac
}
for name in identity fs; do
    for _ in $(seq 100); do
        if up "$name"; then break; fi
        sleep 0.1
    done
    up "$name" || fail "strata-$name did not come up within 10 s"
done
echo "both up; uid $(id -u) is an administrator (STRATA_ADMIN_UIDS)"

say "An administrator issues a token: fs, open/read/list/stat, only under $DATA, 10 minutes"
# shellcheck disable=SC2016 # the command is shown, not run, here
printf '%s$ export STRATA_TOKEN=$(strata-ctl issue --service fs --actions open,read,list,stat --path-prefix %s --ttl 600 --quiet)%s\n' "$G" "$DATA" "$N"
STRATA_TOKEN=$(strata-ctl issue --service fs --actions open,read,list,stat \
    --path-prefix "$DATA" --ttl 600 --quiet) || fail "issue failed"
export STRATA_TOKEN
echo "${STRATA_TOKEN:0:48}…"
ctl 0 whoami

cd "$WORK/srv" # relative paths are taken from here: data/… is $DATA/…
say "The token works inside its prefix (relative paths are from $PWD)"
ctl 0 ls --long data
ctl 0 cat data/hello.txt
[ "$OUT" = "hello from strata" ] || fail "cat printed '$OUT'"
ctl 0 stat data/reports/q3.txt

say "…and nowhere else: a path outside the prefix is refused (code 3)"
ctl 13 cat secret/plans.txt

say "A symlink inside the prefix that leads out of it is refused too (the kernel resolves it)"
ctl 13 cat data/shortcut

say "The holder revokes its own token"
ctl 0 revoke --self
sleep 0.2 # fs learns of revocations within 100 ms

say "Now the same token is refused everywhere (code 2), also in the prototype's raw form"
ctl 12 cat data/hello.txt
ctl 12 fs.list "{\"path\":\"$DATA\"}"

say "Stopping the services (SIGTERM)"
for pid in "${PIDS[@]}"; do
    kill -TERM "$pid"
    wait "$pid" || fail "a service exited with status $? on SIGTERM"
done
PIDS=()
printf '\n%sDemo complete: every step behaved as expected.%s\n' "$B" "$N"
