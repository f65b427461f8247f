#!/usr/bin/env bash
# Run the Strata scenarios (nixos-tests/scenarios/NN-*.sh) under a real
# systemd: a minimal Debian bookworm root file system booted with
# `systemd-nspawn -b`, the unit files from systemd/ installed unchanged, the
# release binaries in /usr/bin.
#
# Why a container and not the NixOS VM tests: no Nix binary cache is
# reachable from the CI machines, so the VM tests cannot run there; nspawn
# can, as root, and it exercises the very same unit files and scenarios.
#
# The host is not run by systemd, hence `--register=no --keep-unit` (there is
# no machined / no host manager to register with) and a tmpfs on
# /run/systemd/nspawn (nspawn keeps propagation mounts there and wants a
# tmpfs; /run on these hosts is a plain directory).
#
# Usage: scripts/container-test.sh [options] [scenario ...]
#   scenario        a scenario name or number (e.g. 03, 03-fs-kill, or
#                   03-fs-kill.sh); default: every NN-*.sh in order
#   -k, --keep      keep the per-run root file system (and print its path)
#   --rebuild       rebuild the cached bookworm root file system first
#   --no-build      do not run `cargo build --release --workspace`
#   --timeout SECS  per-scenario timeout (default 300)
#   --shell         after the selected scenarios (none unless named), open
#                   a root shell inside the booted container; exit it to
#                   tear down
#   --bench         after the selected scenarios (none unless named), start
#                   strata.target and run `strata-bench --systemd` inside
#                   the container: the installed units on their sockets,
#                   side by side with the floor (docs/performance.md); the
#                   JSON report is copied to target/strata-bench-systemd.json
#   --prototype DIR with --bench: also measure the Go prototype's binaries
#                   in DIR (scripts/build-prototype.sh builds them)
#   --prototype-ctl FILE  the prototype v0.3.2's own strata-ctl, built from
#                   its source (docs/compat.md): installed in the container
#                   as /opt/strata-prototype/strata-ctl, where scenario 25
#                   drives it beside strata-v032
#   --bench-args "ARGS"  with --bench: more strata-bench options, e.g.
#                   "--quick" or "--secs 5 --only fs.read"
#   --list          list the scenarios and exit
#   -h, --help      this text
# Environment:
#   STRATA_CT_CACHE   cache directory (default /var/cache/strata)
#   STRATA_CT_MIRROR  Debian mirror (default: the host's apt configuration)
#   STRATA_CT_WORKDIR where per-run copies go (default /var/tmp)
#
# Exit status: 0 when every selected scenario passed (and with --bench, the
# bench printed its table), 1 otherwise, 2 on a usage or setup error.

set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
WORKBASE=${STRATA_CT_WORKDIR:-/var/tmp}
KEEP=0
REBUILD=0
BUILD=1
SCEN_TIMEOUT=300
SHELL_AFTER=0
BENCH=0
PROTOTYPE=""
PROTOTYPE_CTL=""
BENCH_ARGS=""
LIST=0
SELECTED=()

usage() { sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0"; }

while [ $# -gt 0 ]; do
    case $1 in
        -k|--keep) KEEP=1 ;;
        --rebuild) REBUILD=1 ;;
        --no-build) BUILD=0 ;;
        --timeout) shift; SCEN_TIMEOUT=${1:?--timeout needs a value} ;;
        --shell) SHELL_AFTER=1 ;;
        --bench) BENCH=1 ;;
        --prototype) shift; PROTOTYPE=${1:?--prototype needs a directory} ;;
        --bench-args) shift; BENCH_ARGS=${1?--bench-args needs a value} ;;
        --prototype-ctl) shift; PROTOTYPE_CTL=${1:?--prototype-ctl needs a file} ;;
        --list) LIST=1 ;;
        -h|--help) usage; exit 0 ;;
        -*) echo "container-test: unknown option $1" >&2; usage >&2; exit 2 ;;
        *) SELECTED+=("$1") ;;
    esac
    shift
done

log() { printf '[container-test] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }
# The root file system (package list, cache), install, boot and exec
# helpers, shared with scripts/fleet-test.sh.
# shellcheck source=scripts/lib/container-root.sh
. "$REPO/scripts/lib/container-root.sh"

[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap, nspawn and nsenter need it)"
if [ -n "$PROTOTYPE" ] || [ -n "$BENCH_ARGS" ]; then
    [ "$BENCH" -eq 1 ] || die "--prototype and --bench-args go with --bench"
fi
if [ -n "$PROTOTYPE" ]; then
    for b in strata-proto-identity strata-proto-fs; do
        [ -x "$PROTOTYPE/$b" ] || die "no $PROTOTYPE/$b (build it: scripts/build-prototype.sh SOURCE $PROTOTYPE)"
    done
fi

# ---------------------------------------------------------------- tools ----
# Installed here rather than assumed: CI machines are recreated and only what
# the project's own files install is guaranteed to be there.
need_pkgs=()
command -v systemd-nspawn >/dev/null || need_pkgs+=(systemd-container)
command -v debootstrap >/dev/null || need_pkgs+=(debootstrap)
command -v nsenter >/dev/null || need_pkgs+=(util-linux)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    log "installing ${need_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

# ------------------------------------------------------------ scenarios ----
SCEN_DIR=$REPO/nixos-tests/scenarios
[ -d "$SCEN_DIR" ] || die "no scenario directory $SCEN_DIR"
mapfile -t ALL_SCENARIOS < <(cd "$SCEN_DIR" && find . -maxdepth 1 -name '[0-9]*.sh' -printf '%f\n' | sort)
[ ${#ALL_SCENARIOS[@]} -gt 0 ] || die "no scenarios (NN-*.sh) in $SCEN_DIR"
if [ "$LIST" -eq 1 ]; then printf '%s\n' "${ALL_SCENARIOS[@]}"; exit 0; fi
SCENARIOS=()
if [ ${#SELECTED[@]} -eq 0 ]; then
    [ "$SHELL_AFTER" -eq 1 ] || [ "$BENCH" -eq 1 ] || SCENARIOS=("${ALL_SCENARIOS[@]}")
else
    for want in "${SELECTED[@]}"; do
        want=${want##*/}; want=${want%.sh}
        found=""
        for s in "${ALL_SCENARIOS[@]}"; do
            case ${s%.sh} in
                "$want"|"$want"-*) found=$s; break ;;
            esac
        done
        [ -n "$found" ] || die "no scenario matches '$want' (have: ${ALL_SCENARIOS[*]})"
        SCENARIOS+=("$found")
    done
fi

# ------------------------------------------------------------- binaries ----
# strata-loadgen: the load and fault-injection client of the fault
# scenarios (13-15), which run it inside the machine like strata-ctl.
# strata-v032: a client of the prototype's v0.3.2 protocol (scenario 25).
BINS=(strata-identity strata-fs strata-supervisor strata-ctl strata-loadgen strata-v032)
[ "$BENCH" -eq 0 ] || BINS+=(strata-bench)
if [ "$BUILD" -eq 1 ]; then
    log "cargo build --release --workspace"
    (cd "$REPO" && cargo build --release --workspace --quiet) || die "cargo build failed"
fi
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
for b in "${BINS[@]}"; do
    [ -x "$TARGET_DIR/release/$b" ] || die "missing $TARGET_DIR/release/$b (build first, or drop --no-build)"
done

# -------------------------------------------------------- cached rootfs ----
# A fresh copy per run, so that runs never see each other's state.
RUN_DIR=$(mktemp -d "$WORKBASE/strata-ct.XXXXXX")
ROOT=$RUN_DIR/rootfs
ct_copy_rootfs "$REBUILD" "$ROOT"

NSPAWN_PID=""
PID1=""
MACHINE=strata-ct-$$

teardown() {
    local rc=$?
    set +e
    ct_stop "$NSPAWN_PID" "$PID1" container
    if [ "$KEEP" -eq 1 ]; then
        log "kept root file system: $ROOT (console log: $RUN_DIR/console.log)"
    else
        rm -rf --one-file-system "$RUN_DIR"
    fi
    exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------- install -----
ct_install_strata "$ROOT" "$TARGET_DIR" "${BINS[@]}"
rm -rf "$ROOT/opt/strata-tests"
mkdir -p "$ROOT/opt/strata-tests"
cp -a "$SCEN_DIR/." "$ROOT/opt/strata-tests/"
if [ -n "$PROTOTYPE" ]; then
    mkdir -p "$ROOT/opt/strata-prototype"
    install -m 0755 "$PROTOTYPE/strata-proto-identity" "$PROTOTYPE/strata-proto-fs" "$ROOT/opt/strata-prototype/"
fi
rm -f "$ROOT/opt/strata-prototype/strata-ctl"
if [ -n "$PROTOTYPE_CTL" ]; then
    [ -x "$PROTOTYPE_CTL" ] || die "no executable $PROTOTYPE_CTL"
    mkdir -p "$ROOT/opt/strata-prototype"
    install -m 0755 "$PROTOTYPE_CTL" "$ROOT/opt/strata-prototype/strata-ctl"
fi

# --------------------------------------------------------------- boot ------
ct_prepare_host

log "booting container $MACHINE"
# --private-network: the container gets its own network namespace (only lo),
# so nothing in it can touch the host's network.
systemd-nspawn -q -D "$ROOT" -M "$MACHINE" -b --register=no --keep-unit \
    --private-network --console=read-only \
    </dev/null >"$RUN_DIR/console.log" 2>&1 &
NSPAWN_PID=$!

PID1=$(ct_wait_pid1 "$NSPAWN_PID" "$RUN_DIR/console.log")

in_ct() { ct_exec "$PID1" "$@"; }

log "waiting for the container's systemd (PID $PID1 on the host)"
ct_wait_booted "$PID1" "$RUN_DIR/console.log" container

# ----------------------------------------------------------- scenarios -----
passed=()
failed=()
for s in ${SCENARIOS[@]+"${SCENARIOS[@]}"}; do
    log "=== $s"
    start=$(date +%s)
    out=$RUN_DIR/${s%.sh}.log
    # Journal cursor before the scenario: on failure, print only what it did.
    cursor=$(in_ct journalctl -n0 --show-cursor --no-pager 2>/dev/null | sed -n 's/^-- cursor: //p') || true
    if in_ct timeout --kill-after=10 "$SCEN_TIMEOUT" bash "/opt/strata-tests/$s" >"$out" 2>&1; then
        sed 's/^/    /' "$out"
        log "PASS $s ($(( $(date +%s) - start )) s)"
        passed+=("$s")
    else
        rc=$?
        sed 's/^/    /' "$out"
        log "FAIL $s (exit $rc, $(( $(date +%s) - start )) s); journal of the strata units during it:"
        if [ -n "$cursor" ]; then
            in_ct journalctl --no-pager -o short-precise --after-cursor="$cursor" -u 'strata*' 2>&1 | sed 's/^/    | /' || true
        else
            in_ct journalctl --no-pager -o short-precise -u 'strata*' | tail -n 200 | sed 's/^/    | /' || true
        fi
        failed+=("$s")
    fi
done

# ---------------------------------------------------------------- bench -----
if [ "$BENCH" -eq 1 ]; then
    s="strata-bench --systemd"
    log "=== $s"
    start=$(date +%s)
    out=$RUN_DIR/bench.log
    bench_cmd=(strata-bench --systemd --json /var/tmp/strata-bench-systemd.json)
    [ -z "$PROTOTYPE" ] || bench_cmd+=(--prototype /opt/strata-prototype)
    # shellcheck disable=SC2206 # word splitting of the options is the point
    [ -z "$BENCH_ARGS" ] || bench_cmd+=($BENCH_ARGS)
    log "${bench_cmd[*]}"
    if in_ct systemctl start strata.target &&
       in_ct timeout --kill-after=10 "$SCEN_TIMEOUT" "${bench_cmd[@]}" >"$out" 2>&1 &&
       grep -q '^closed loop' "$out" && grep -q '^goals' "$out"; then
        cat "$out"
        cp "$ROOT/var/tmp/strata-bench-systemd.json" "$TARGET_DIR/strata-bench-systemd.json"
        log "PASS $s ($(( $(date +%s) - start )) s); JSON report: $TARGET_DIR/strata-bench-systemd.json"
        passed+=("$s")
    else
        cat "$out"
        log "FAIL $s ($(( $(date +%s) - start )) s); journal of the strata units:"
        in_ct journalctl --no-pager -o short-precise -u 'strata*' | tail -n 100 | sed 's/^/    | /' || true
        failed+=("$s")
    fi
fi

if [ "$SHELL_AFTER" -eq 1 ]; then
    log "shell in the container (scenarios in /opt/strata-tests); exit to tear down"
    in_ct /bin/bash -l || true
fi

echo
log "summary:"
for s in ${passed[@]+"${passed[@]}"}; do echo "  PASS $s"; done
for s in ${failed[@]+"${failed[@]}"}; do echo "  FAIL $s"; done
# The plain closing line CI reads.
echo "${#passed[@]} passed, ${#failed[@]} failed"
[ ${#failed[@]} -eq 0 ]
