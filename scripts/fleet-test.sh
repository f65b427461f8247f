#!/usr/bin/env bash
# Run the fleet scenarios (nixos-tests/fleet/NN-*.sh, issue 15) on three
# containers under real systemd: three copies of container-test.sh's Debian
# bookworm root (scripts/lib/container-root.sh), booted with
# `systemd-nspawn -b --network-bridge` on a bridge that this script makes
# with `ip link` in a network namespace of its own, each running Debian's
# etcd-server as a member of one cluster and the Strata units configured as
# one fleet (docs/fleet.md).
#
# What it sets up, before the scenarios:
#  - network namespace strata-fleet-$$ holding bridge sfbr0; nspawn runs in
#    it (nsenter --net), so each container's veth lands on that bridge and
#    no packet of the test reaches the host's network; node N has
#    10.77.0.N/24 on host0, configured inside it with iproute2;
#  - etcd on each node (/etc/default/etcd: a new three-member cluster with a
#    per-run token, periodic auto-compaction), started and checked with
#    `etcdctl endpoint health --cluster`;
#  - Strata as container-test.sh installs it, then the fleet: a root key
#    made on the host (`strata-ctl fleet init`), each node's identity key
#    endorsed (`strata-ctl fleet endorse`), /etc/strata/fleet.env and the
#    drop-in of docs/fleet.md for strata-identity and strata-fs.
# The scenarios run on the host and drive the nodes through nsenter; their
# helpers (run a command on node N, partition and heal it, stop and start
# its etcd) are in nixos-tests/fleet/lib.sh. Everything is torn down on
# exit: containers, namespace, bridge, per-run copies.
#
# Usage: scripts/fleet-test.sh [options] [scenario ...]
#   scenario        a scenario name or number (e.g. 03 or 03-revocation);
#                   default: every NN-*.sh in order
#   -k, --keep      keep the per-run root file systems (and print the path)
#   --rebuild       rebuild the cached bookworm root file system first
#   --no-build      do not run `cargo build --release --workspace`
#   --timeout SECS  per-scenario timeout (default 240)
#   --shell         after the scenarios, open a shell on the host with the
#                   scenario helpers loaded (on_node 2 strata-ctl status,
#                   partition 3, heal 3...); exit it to tear down
#   --list          list the scenarios and exit
#   -h, --help      this text
# Environment: STRATA_CT_CACHE, STRATA_CT_MIRROR, STRATA_CT_WORKDIR as for
# scripts/container-test.sh; STRATA_FLEET_MAX_STALENESS (default 3) is the
# nodes' STRATA_FLEET_MAX_STALENESS_SECS.
#
# Figures (revocation propagation, verification cost, time to fail closed
# and to recover) are printed at the end as `figure NAME JSON` lines and
# saved to target/fleet-figures.json.
#
# Exit status: 0 when every selected scenario passed, 1 otherwise, 2 on a
# usage or setup error.

set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
WORKBASE=${STRATA_CT_WORKDIR:-/var/tmp}
KEEP=0
REBUILD=0
BUILD=1
SCEN_TIMEOUT=240
SHELL_AFTER=0
LIST=0
SELECTED=()
NODES=3
FLEET_NAME=strata-test
MAX_STALENESS=${STRATA_FLEET_MAX_STALENESS:-3}
NETNS=strata-fleet-$$
BRIDGE=sfbr0
SUBNET=10.77.0
TD=/srv/fleet

usage() { sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0"; }

while [ $# -gt 0 ]; do
    case $1 in
        -k|--keep) KEEP=1 ;;
        --rebuild) REBUILD=1 ;;
        --no-build) BUILD=0 ;;
        --timeout) shift; SCEN_TIMEOUT=${1:?--timeout needs a value} ;;
        --shell) SHELL_AFTER=1 ;;
        --list) LIST=1 ;;
        -h|--help) usage; exit 0 ;;
        -*) echo "fleet-test: unknown option $1" >&2; usage >&2; exit 2 ;;
        *) SELECTED+=("$1") ;;
    esac
    shift
done

log() { printf '[fleet-test] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }
# shellcheck source=scripts/lib/container-root.sh
. "$REPO/scripts/lib/container-root.sh"

# ------------------------------------------------------------ scenarios ----
SCEN_DIR=$REPO/nixos-tests/fleet
[ -d "$SCEN_DIR" ] || die "no scenario directory $SCEN_DIR"
mapfile -t ALL_SCENARIOS < <(cd "$SCEN_DIR" && find . -maxdepth 1 -name '[0-9]*.sh' -printf '%f\n' | sort)
[ ${#ALL_SCENARIOS[@]} -gt 0 ] || die "no scenarios (NN-*.sh) in $SCEN_DIR"
if [ "$LIST" -eq 1 ]; then printf '%s\n' "${ALL_SCENARIOS[@]}"; exit 0; fi
SCENARIOS=()
if [ ${#SELECTED[@]} -eq 0 ]; then
    SCENARIOS=("${ALL_SCENARIOS[@]}")
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

[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap, network namespaces, nspawn and nsenter need it)"
case $MAX_STALENESS in
    ''|*[!0-9]*) die "STRATA_FLEET_MAX_STALENESS must be a number of seconds, not '$MAX_STALENESS'" ;;
esac

# ---------------------------------------------------------------- tools ----
need_pkgs=()
command -v systemd-nspawn >/dev/null || need_pkgs+=(systemd-container)
command -v debootstrap >/dev/null || need_pkgs+=(debootstrap)
command -v nsenter >/dev/null || need_pkgs+=(util-linux)
command -v ip >/dev/null || need_pkgs+=(iproute2)
command -v jq >/dev/null || need_pkgs+=(jq)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    log "installing ${need_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

# ------------------------------------------------------------- binaries ----
BINS=(strata-identity strata-fs strata-supervisor strata-ctl strata-loadgen)
if [ "$BUILD" -eq 1 ]; then
    log "cargo build --release --workspace"
    (cd "$REPO" && cargo build --release --workspace --quiet) || die "cargo build failed"
fi
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
for b in "${BINS[@]}"; do
    [ -x "$TARGET_DIR/release/$b" ] || die "missing $TARGET_DIR/release/$b (build first, or drop --no-build)"
done
CTL=$TARGET_DIR/release/strata-ctl

# ------------------------------------------------------------ teardown -----
T_START=$(date +%s)
RUN_DIR=$(mktemp -d "$WORKBASE/strata-fleet.XXXXXX")
ROOTS=()
MACHINES=()
PORTS=()
IPS=()
NSPAWN_PIDS=()
PID1S=()
for i in $(seq 1 "$NODES"); do
    ROOTS+=("$RUN_DIR/node-$i")
    # Short: nspawn names the bridge port vb-<machine>, at most 15 bytes.
    MACHINES+=("sf$$n$i")
    PORTS+=("vb-sf$$n$i")
    IPS+=("$SUBNET.$i")
done

SCEN_PID=""
teardown() {
    local rc=$? i
    set +e
    # A scenario still running (interrupted): timeout passes TERM on to it.
    if [ -n "$SCEN_PID" ]; then
        kill -TERM "$SCEN_PID" 2>/dev/null
        wait "$SCEN_PID" 2>/dev/null
    fi
    # Halt all at once, then wait for each.
    for i in "${!NSPAWN_PIDS[@]}"; do
        [ -z "${PID1S[$i]:-}" ] || kill -s RTMIN+3 "${PID1S[$i]}" 2>/dev/null
    done
    for i in "${!NSPAWN_PIDS[@]}"; do
        ct_stop "${NSPAWN_PIDS[$i]}" "${PID1S[$i]:-}" "node-$((i + 1))"
    done
    if ip netns list 2>/dev/null | grep -qw "$NETNS"; then
        ip -n "$NETNS" link del "$BRIDGE" 2>/dev/null
        ip netns del "$NETNS" || log "could not delete network namespace $NETNS"
    fi
    if [ "$KEEP" -eq 1 ]; then
        log "kept the nodes' root file systems in $RUN_DIR (console logs: $RUN_DIR/node-N.console)"
    else
        rm -rf --one-file-system "$RUN_DIR"
    fi
    log "runner took $(($(date +%s) - T_START)) s"
    exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------ the nodes ----
ct_copy_rootfs "$REBUILD" "${ROOTS[@]}"

members=""
for i in $(seq 1 "$NODES"); do
    members+="${members:+,}node-$i=http://$SUBNET.$i:2380"
done
CLUSTER_TOKEN=strata-fleet-$$-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')

for i in $(seq 1 "$NODES"); do
    root=${ROOTS[$((i - 1))]}
    ip=${IPS[$((i - 1))]}
    ct_install_strata "$root" "$TARGET_DIR" "${BINS[@]}"
    echo "node-$i" >"$root/etc/hostname"
    # The base root masks etcd (single-node scenarios have no cluster);
    # here it is wanted, and started once the node has its address.
    rm -f "$root/etc/systemd/system/etcd.service"
    cat >"$root/etc/default/etcd" <<EOF
# Written by scripts/fleet-test.sh: member node-$i of a new three-member
# cluster on the test's bridge.
ETCD_NAME=node-$i
ETCD_DATA_DIR=/var/lib/etcd/default
ETCD_LISTEN_PEER_URLS=http://$ip:2380
ETCD_LISTEN_CLIENT_URLS=http://$ip:2379,http://127.0.0.1:2379
ETCD_INITIAL_ADVERTISE_PEER_URLS=http://$ip:2380
ETCD_ADVERTISE_CLIENT_URLS=http://$ip:2379
ETCD_INITIAL_CLUSTER=$members
ETCD_INITIAL_CLUSTER_STATE=new
ETCD_INITIAL_CLUSTER_TOKEN=$CLUSTER_TOKEN
ETCD_AUTO_COMPACTION_MODE=periodic
ETCD_AUTO_COMPACTION_RETENTION=5m
EOF
    # Test data for fs (STRATA_FS_ROOTS=/srv), world-readable as fs
    # runs as its own user.
    mkdir -p "$root$TD"
    printf 'hello fleet\n' >"$root$TD/hello.txt"
    chmod -R a+rX "$root/srv"
    mkdir -p "$root/opt/strata-fleet"
    install -m 0755 "$SCEN_DIR/poll.sh" "$root/opt/strata-fleet/poll.sh"
done

ct_prepare_host
ip netns add "$NETNS"
ip -n "$NETNS" link set lo up
ip -n "$NETNS" link add "$BRIDGE" type bridge
ip -n "$NETNS" link set "$BRIDGE" up

for i in $(seq 1 "$NODES"); do
    log "booting node-$i (machine ${MACHINES[$((i - 1))]}) on $BRIDGE in $NETNS"
    # nsenter --net execs nspawn in the namespace ($! is nspawn itself).
    # Not `ip netns exec`: it also remounts /sys for the namespace, which
    # hides /sys/fs/cgroup from nspawn.
    nsenter --net="/run/netns/$NETNS" systemd-nspawn -q -D "${ROOTS[$((i - 1))]}" -M "${MACHINES[$((i - 1))]}" \
        -b --register=no --keep-unit --network-bridge="$BRIDGE" --console=read-only \
        </dev/null >"$RUN_DIR/node-$i.console" 2>&1 &
    NSPAWN_PIDS+=($!)
done
for i in $(seq 1 "$NODES"); do
    PID1S+=("$(ct_wait_pid1 "${NSPAWN_PIDS[$((i - 1))]}" "$RUN_DIR/node-$i.console")")
done
in_node() {
    local n=$1
    shift
    ct_exec "${PID1S[$((n - 1))]}" "$@"
}
for i in $(seq 1 "$NODES"); do
    ct_wait_booted "${PID1S[$((i - 1))]}" "$RUN_DIR/node-$i.console" "node-$i"
done

# --------------------------------------------------------------- network ----
for i in $(seq 1 "$NODES"); do
    port=${PORTS[$((i - 1))]}
    [ "$(ip -n "$NETNS" -j link show "$port" 2>/dev/null | jq -r '.[0].master // empty')" = "$BRIDGE" ] ||
        die "node-$i's bridge port $port is not on $BRIDGE: $(ip -n "$NETNS" -br link 2>&1)"
    in_node "$i" ip link set host0 up
    in_node "$i" ip addr add "${IPS[$((i - 1))]}/24" dev host0
done

# ------------------------------------------------------------------ etcd ----
log "starting etcd on every node (cluster token $CLUSTER_TOKEN)"
for i in $(seq 1 "$NODES"); do
    # --no-block: a member of a new cluster reports ready only once the
    # others are up.
    in_node "$i" systemctl start --no-block etcd.service
done
endpoints=""
for ip in "${IPS[@]}"; do endpoints+="${endpoints:+,}http://$ip:2379"; done
healthy=0
for _ in $(seq 1 120); do
    if in_node 1 env ETCDCTL_API=3 etcdctl --endpoints="$endpoints" --dial-timeout=2s \
            endpoint health --cluster >"$RUN_DIR/etcd-health" 2>&1; then
        healthy=1
        break
    fi
    sleep 0.5
done
if [ "$healthy" -ne 1 ]; then
    cat "$RUN_DIR/etcd-health" >&2
    for i in $(seq 1 "$NODES"); do
        log "node-$i's etcd journal:"
        in_node "$i" journalctl --no-pager -u etcd.service | tail -n 30 >&2 || true
    done
    die "the etcd cluster did not become healthy in 60 s"
fi
log "etcd cluster healthy: $(tr '\n' ';' <"$RUN_DIR/etcd-health")"

# ---------------------------------------------------------------- strata ----
# Each identity makes its key at its first start; the root endorses the
# public key it publishes (identity.pubkey; /run/strata/identity.pub too).
PUBKEYS=()
for i in $(seq 1 "$NODES"); do
    in_node "$i" systemctl start strata.target
    answer=$(in_node "$i" strata-ctl identity.pubkey) || die "node-$i: identity.pubkey failed: $answer"
    pub=$(printf '%s' "$answer" | jq -r '.result.public_key // empty')
    [ -n "$pub" ] || die "node-$i: no public key in $answer"
    file_pub=$(in_node "$i" cat /run/strata/identity.pub 2>/dev/null | tr -d '\n') || true
    [ -z "$file_pub" ] || [ "$file_pub" = "$pub" ] ||
        die "node-$i: /run/strata/identity.pub ($file_pub) differs from identity.pubkey ($pub)"
    PUBKEYS+=("$pub")
done

ROOT_KEY=$RUN_DIR/fleet-root.json
init=$("$CTL" fleet init --out "$ROOT_KEY" --fleet "$FLEET_NAME" 2>/dev/null) || die "strata-ctl fleet init failed"
ROOT_PUB=$(printf '%s' "$init" | jq -r .public_key)
log "fleet $FLEET_NAME: root key $(printf '%s' "$init" | jq -r .kid)"

endpoints_of() {
    # The node's own member first: the others only when it is down.
    local n=$1 out ip
    out="http://${IPS[$((n - 1))]}:2379"
    for ip in "${IPS[@]}"; do
        [ "$ip" = "${IPS[$((n - 1))]}" ] || out+=",http://$ip:2379"
    done
    echo "$out"
}

# The drop-in for identity and fs (docs/fleet.md): the repository's
# systemd/strata-fleet.conf when it has one (it loads the endorsement from
# /etc/strata/fleet/endorsement as a credential and sets
# STRATA_FLEET_ENDORSEMENT_FILE itself), else the fleet contract's text,
# written here, with the endorsement named in fleet.env. Either way a second
# drop-in opens the units' IPAddressDeny=any to the bridge's subnet and
# loopback, the only addresses etcd is reached at.
DROPIN_SRC=$REPO/systemd/strata-fleet.conf
CONTRACT_DROPIN="[Service]
EnvironmentFile=/etc/strata/fleet.env
PrivateNetwork=no
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6"
ALLOW_DROPIN="[Service]
IPAddressAllow=$SUBNET.0/24 127.0.0.0/8"
if [ -f "$DROPIN_SRC" ]; then
    ENDORSEMENT=/etc/strata/fleet/endorsement
    log "drop-in: $DROPIN_SRC"
else
    ENDORSEMENT=/etc/strata/fleet-endorsement
    log "drop-in: the fleet contract's (no $DROPIN_SRC)"
fi

for i in $(seq 1 "$NODES"); do
    "$CTL" fleet endorse --root-key "$ROOT_KEY" --node-id "node-$i" \
        --node-key "${PUBKEYS[$((i - 1))]}" >"$RUN_DIR/node-$i.endorsement" ||
        die "strata-ctl fleet endorse failed for node-$i"
    "$CTL" fleet verify --root-public-key "$ROOT_PUB" --fleet "$FLEET_NAME" \
        "$RUN_DIR/node-$i.endorsement" >/dev/null || die "node-$i's endorsement does not verify"
    in_node "$i" mkdir -p "$(dirname "$ENDORSEMENT")" /etc/systemd/system/strata-identity.service.d \
        /etc/systemd/system/strata-fs.service.d
    if [ -f "$DROPIN_SRC" ]; then
        # Root-only: systemd hands it to the services as a credential.
        in_node "$i" sh -c "umask 077 && cat >$ENDORSEMENT" <"$RUN_DIR/node-$i.endorsement"
        endorsement_env=""
    else
        # Public (no secret in it); readable by identity's dynamic user.
        in_node "$i" sh -c "cat >$ENDORSEMENT && chmod 0644 $ENDORSEMENT" <"$RUN_DIR/node-$i.endorsement"
        endorsement_env="STRATA_FLEET_ENDORSEMENT_FILE=$ENDORSEMENT"
    fi
    in_node "$i" sh -c 'cat >/etc/strata/fleet.env && chmod 0644 /etc/strata/fleet.env' <<EOF
STRATA_FLEET_NAME=$FLEET_NAME
STRATA_FLEET_ROOT_PUBLIC_KEY=$ROOT_PUB
$endorsement_env
STRATA_FLEET_ETCD_ENDPOINTS=$(endpoints_of "$i")
STRATA_FLEET_MAX_STALENESS_SECS=$MAX_STALENESS
STRATA_NODE_ID=node-$i
EOF
    for u in strata-identity strata-fs; do
        if [ -f "$DROPIN_SRC" ]; then
            in_node "$i" sh -c "cat >/etc/systemd/system/$u.service.d/fleet.conf" <"$DROPIN_SRC"
        else
            printf '%s\n' "$CONTRACT_DROPIN" | in_node "$i" sh -c "cat >/etc/systemd/system/$u.service.d/fleet.conf"
        fi
        printf '%s\n' "$ALLOW_DROPIN" | in_node "$i" sh -c "cat >/etc/systemd/system/$u.service.d/fleet-test.conf"
    done
    in_node "$i" systemctl daemon-reload
    # identity keeps its key (its state directory) across the restart.
    in_node "$i" systemctl restart strata-identity.service strata-fs.service
    answer=$(in_node "$i" strata-ctl identity.pubkey) || die "node-$i: identity.pubkey after the restart: $answer"
    [ "$(printf '%s' "$answer" | jq -r .result.public_key)" = "${PUBKEYS[$((i - 1))]}" ] ||
        die "node-$i: identity's key changed across its restart: $answer"
    for u in strata-identity.service strata-fs.service; do
        [ "$(in_node "$i" systemctl is-active "$u")" = active ] ||
            die "node-$i: $u is not active with the fleet configuration: $(in_node "$i" journalctl --no-pager -u "$u" | tail -n 20)"
    done
done
log "fleet configured on every node ($(($(date +%s) - T_START)) s since start)"

# ------------------------------------------------------------ scenarios ----
FIGURES=$RUN_DIR/figures.jsonl
: >"$FIGURES"
export FLEET_PID1S="${PID1S[*]}" FLEET_NETNS="$NETNS" FLEET_BRIDGE="$BRIDGE" \
    FLEET_PORTS="${PORTS[*]}" FLEET_IPS="${IPS[*]}" FLEET_NAME FLEET_MAX_STALENESS="$MAX_STALENESS" \
    FLEET_ROOT_KEY="$ROOT_KEY" FLEET_CTL="$CTL" FLEET_FIGURES="$FIGURES" FLEET_TD="$TD"

# reset_nodes: what a scenario may have left behind when it failed half
# way, undone so that the next one starts from a whole fleet: every port
# back on the bridge, every etcd member and strata.target started, the
# cluster healthy.
reset_nodes() {
    local i
    for i in $(seq 1 "$NODES"); do
        ip -n "$NETNS" link set "${PORTS[$((i - 1))]}" master "$BRIDGE"
        in_node "$i" systemctl start --no-block etcd.service strata.target
    done
    for _ in $(seq 1 60); do
        in_node 1 env ETCDCTL_API=3 etcdctl --endpoints="$endpoints" --dial-timeout=2s \
            endpoint health --cluster >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    log "warning: the etcd cluster is not healthy again 30 s after a scenario"
}

passed=()
failed=()
for s in "${SCENARIOS[@]}"; do
    log "=== $s"
    start=$(date +%s)
    out=$RUN_DIR/${s%.sh}.log
    cursors=()
    for i in $(seq 1 "$NODES"); do
        cursors+=("$(in_node "$i" journalctl -n0 --show-cursor --no-pager 2>/dev/null | sed -n 's/^-- cursor: //p')") || true
    done
    # In the background and waited for: `wait` returns at once on a signal,
    # so INT/TERM tear down without waiting for the scenario to end.
    timeout --kill-after=10 "$SCEN_TIMEOUT" bash "$SCEN_DIR/$s" >"$out" 2>&1 &
    SCEN_PID=$!
    if wait "$SCEN_PID"; then
        SCEN_PID=""
        sed 's/^/    /' "$out"
        log "PASS $s ($(($(date +%s) - start)) s)"
        passed+=("$s")
    else
        rc=$?
        SCEN_PID=""
        sed 's/^/    /' "$out"
        log "FAIL $s (exit $rc, $(($(date +%s) - start)) s); journals of strata and etcd during it:"
        for i in $(seq 1 "$NODES"); do
            echo "    --- node-$i"
            in_node "$i" journalctl --no-pager -o short-precise ${cursors[$((i - 1))]:+--after-cursor="${cursors[$((i - 1))]}"} \
                -u 'strata*' -u etcd.service 2>&1 | tail -n 60 | sed 's/^/    | /' || true
        done
        failed+=("$s")
        reset_nodes
    fi
done

if [ "$SHELL_AFTER" -eq 1 ]; then
    log "shell on the host with the fleet helpers (on_node N CMD, ctl N ARGS, partition N, heal N, etcd_stop N...); exit to tear down"
    SCENARIO=shell bash --rcfile <(echo ". '$SCEN_DIR/lib.sh'; set +eu; trap - EXIT; PS1='fleet# '") -i || true
fi

# -------------------------------------------------------------- figures ----
mkdir -p "$TARGET_DIR"
jq -s --arg at "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --argjson nodes "$NODES" \
    --argjson staleness "$MAX_STALENESS" \
    '{at: $at, nodes: $nodes, max_staleness_secs: $staleness,
      figures: (map({(.name): .value}) | add // {})}' "$FIGURES" >"$TARGET_DIR/fleet-figures.json"
echo
log "figures (also in $TARGET_DIR/fleet-figures.json):"
jq -r '"figure \(.name) \(.value | tojson)"' "$FIGURES"
log "summary:"
for s in ${passed[@]+"${passed[@]}"}; do echo "  PASS $s"; done
for s in ${failed[@]+"${failed[@]}"}; do echo "  FAIL $s"; done
echo "${#passed[@]} passed, ${#failed[@]} failed"
[ ${#failed[@]} -eq 0 ]
