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
CACHE=${STRATA_CT_CACHE:-/var/cache/strata}
WORKBASE=${STRATA_CT_WORKDIR:-/var/tmp}
SUITE=bookworm
# Packages on top of debootstrap's minbase. Kept small on purpose: systemd
# and dbus to boot and to talk to PID 1, procps for ps/pgrep in scenarios,
# jq to read JSON answers (the NixOS tests add pkgs.jq likewise), passwd for
# useradd.
PACKAGES=systemd,systemd-sysv,dbus,procps,jq,passwd
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
# The Debian mirror the host's apt uses (deb822 .sources or one-line
# sources.list), so that this works wherever apt works.
host_mirror() {
    local f uri
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        # First URIs: of a stanza whose Suites: has bookworm (not -security).
        uri=$(awk '
            /^[[:space:]]*$/ { if (!done && u != "" && s ~ / bookworm /) { print u; done=1 } u=""; s=""; next }
            tolower($1) == "uris:"   { u=$2 }
            tolower($1) == "suites:" { s=" "; for (i=2;i<=NF;i++) s=s $i " " }
            END { if (!done && u != "" && s ~ / bookworm /) print u }' "$f")
        [ -n "$uri" ] && { echo "$uri"; return; }
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        uri=$(awk '$1=="deb" { for (i=2;i<=NF;i++) if ($i !~ /^\[/ && $i ~ /:\/\//) { if ($(i+1)=="bookworm") { print $i; exit } break } }' "$f")
        [ -n "$uri" ] && { echo "$uri"; return; }
    done
    echo http://deb.debian.org/debian
}

mkdir -p "$CACHE"
ROOTFS_CACHE=$CACHE/rootfs-$SUITE
# The cache is keyed by the package list: changing PACKAGES rebuilds it.
STAMP="suite=$SUITE packages=$PACKAGES v=1"

build_rootfs() {
    local mirror tmp
    mirror=${STRATA_CT_MIRROR:-$(host_mirror)}
    tmp=$CACHE/.rootfs-$SUITE.tmp
    rm -rf "$tmp"
    log "debootstrap $SUITE from $mirror (cached in $ROOTFS_CACHE afterwards)"
    if ! debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$tmp" "$mirror" \
            >"$CACHE/debootstrap.log" 2>&1; then
        tail -n 30 "$CACHE/debootstrap.log" >&2
        die "debootstrap failed (log: $CACHE/debootstrap.log)"
    fi
    # Container hygiene: nothing to log in on (the runner uses nsenter), no
    # first-boot prompts, a hostname; apt lists are dead weight.
    chroot "$tmp" systemctl mask console-getty.service getty@tty1.service \
        systemd-firstboot.service >/dev/null 2>&1 || true
    echo strata-ct >"$tmp/etc/hostname"
    rm -rf "$tmp"/var/lib/apt/lists/* "$tmp"/var/cache/apt/*.bin
    echo "$STAMP" >"$tmp/.strata-rootfs-stamp"
    rm -rf "$ROOTFS_CACHE"
    mv "$tmp" "$ROOTFS_CACHE"
}

# Serialize cache creation between concurrent runs on one machine.
exec 9>"$CACHE/.lock"
flock 9
if [ "$REBUILD" -eq 1 ] || [ "$(cat "$ROOTFS_CACHE/.strata-rootfs-stamp" 2>/dev/null)" != "$STAMP" ]; then
    build_rootfs
else
    log "using cached root file system $ROOTFS_CACHE"
fi

# A fresh copy per run, so that runs never see each other's state.
RUN_DIR=$(mktemp -d "$WORKBASE/strata-ct.XXXXXX")
ROOT=$RUN_DIR/rootfs
cp -a --reflink=auto "$ROOTFS_CACHE" "$ROOT"
flock -u 9
exec 9>&-

NSPAWN_PID=""
PID1=""
MACHINE=strata-ct-$$

teardown() {
    local rc=$?
    set +e
    if [ -n "$NSPAWN_PID" ] && kill -0 "$NSPAWN_PID" 2>/dev/null; then
        # Clean shutdown first (systemd's SIGRTMIN+3 = halt), then force.
        if [ -n "$PID1" ]; then kill -s RTMIN+3 "$PID1" 2>/dev/null; fi
        for _ in $(seq 1 100); do
            kill -0 "$NSPAWN_PID" 2>/dev/null || break
            sleep 0.2
        done
        if kill -0 "$NSPAWN_PID" 2>/dev/null; then
            log "container did not stop in 20 s; killing it"
            kill -KILL "$NSPAWN_PID" 2>/dev/null
            [ -n "$PID1" ] && kill -KILL "$PID1" 2>/dev/null
        fi
        wait "$NSPAWN_PID" 2>/dev/null
    fi
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
# Binaries where a Debian package puts them; units unchanged where a package
# puts them (/usr/lib/systemd/system), so /etc stays free for drop-ins.
for b in "${BINS[@]}"; do
    install -m 0755 "$TARGET_DIR/release/$b" "$ROOT/usr/bin/$b"
done
UNITDIR=$ROOT/usr/lib/systemd/system
mkdir -p "$UNITDIR" "$ROOT/usr/lib/sysusers.d" "$ROOT/usr/lib/tmpfiles.d"
for u in "$REPO"/systemd/*.service "$REPO"/systemd/*.socket "$REPO"/systemd/*.target; do
    [ -f "$u" ] && install -m 0644 "$u" "$UNITDIR/"
done
[ -f "$REPO/systemd/strata-sysusers.conf" ] &&
    install -m 0644 "$REPO/systemd/strata-sysusers.conf" "$ROOT/usr/lib/sysusers.d/strata.conf"
[ -f "$REPO/systemd/strata-tmpfiles.conf" ] &&
    install -m 0644 "$REPO/systemd/strata-tmpfiles.conf" "$ROOT/usr/lib/tmpfiles.d/strata.conf"
# What a package's postinst does: create the system users now (also done at
# boot by systemd-sysusers.service, but only when /etc needs an update).
chroot "$ROOT" systemd-sysusers >/dev/null
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
# A machine id of its own per run (journal files are named after it).
od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$ROOT/etc/machine-id"
echo >>"$ROOT/etc/machine-id"

# --------------------------------------------------------------- boot ------
mkdir -p /run/systemd/nspawn
if ! mountpoint -q /run/systemd/nspawn; then
    mount -t tmpfs -o mode=0755 tmpfs /run/systemd/nspawn
fi

log "booting container $MACHINE"
# --private-network: the container gets its own network namespace (only lo),
# so nothing in it can touch the host's network.
systemd-nspawn -q -D "$ROOT" -M "$MACHINE" -b --register=no --keep-unit \
    --private-network --console=read-only \
    </dev/null >"$RUN_DIR/console.log" 2>&1 &
NSPAWN_PID=$!

# The container's PID 1 is the descendant of nspawn whose pid in its own pid
# namespace is 1 (last field of NSpid).
find_pid1() {
    local p nspid
    for p in $(pgrep -P "$NSPAWN_PID" 2>/dev/null) \
             $(for c in $(pgrep -P "$NSPAWN_PID" 2>/dev/null); do pgrep -P "$c"; done); do
        nspid=$(awk '/^NSpid:/ { print $NF }' "/proc/$p/status" 2>/dev/null)
        if [ "$nspid" = 1 ]; then echo "$p"; return 0; fi
    done
    return 1
}
for _ in $(seq 1 100); do
    kill -0 "$NSPAWN_PID" 2>/dev/null || { cat "$RUN_DIR/console.log" >&2; die "systemd-nspawn exited"; }
    PID1=$(find_pid1) && break
    sleep 0.1
done
[ -n "$PID1" ] || die "could not find the container's PID 1"

# Run a command inside the container: every namespace of its PID 1, a clean
# environment (nothing of the host's leaks in), cwd /.
in_ct() {
    nsenter -t "$PID1" -m -u -i -n -p -C -r -w -- \
        /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 TERM=dumb "$@"
}

log "waiting for the container's systemd (PID $PID1 on the host)"
state=""
for _ in $(seq 1 240); do
    state=$(in_ct systemctl is-system-running 2>/dev/null) || true
    case $state in
        running|degraded) break ;;
    esac
    sleep 0.5
done
case $state in
    running) log "container is running" ;;
    degraded)
        log "container is degraded (not fatal); failed units:"
        in_ct systemctl --no-pager --failed >&2 || true ;;
    *)
        cat "$RUN_DIR/console.log" >&2
        die "container did not finish booting (state: '${state:-none}')" ;;
esac

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
