# shellcheck shell=bash
# Helpers for the fleet scenarios (NN-*.sh beside this file). Sourced, never
# run.
#
# Unlike nixos-tests/scenarios/, these scenarios run on the HOST of the
# containers, as root, started by scripts/fleet-test.sh: a fleet test is
# about several nodes and the network between them, so it drives the nodes
# from outside (nsenter into each container) and cuts their bridge ports.
# The runner exports what the helpers need:
#   FLEET_PID1S         the containers' PID 1s on the host, node-1 first
#   FLEET_NETNS         the test's network namespace (holds the bridge)
#   FLEET_BRIDGE        the bridge in it
#   FLEET_PORTS         each node's bridge port (host end of its veth)
#   FLEET_IPS           each node's address on the bridge
#   FLEET_NAME          the fleet's name (tokens' audience fleet:$FLEET_NAME)
#   FLEET_MAX_STALENESS STRATA_FLEET_MAX_STALENESS_SECS on every node
#   FLEET_ROOT_KEY      the fleet root key file (on the host)
#   FLEET_CTL           strata-ctl on the host (for `fleet` subcommands)
#   FLEET_FIGURES       file the scenarios append their figures to (JSON lines)
#   FLEET_TD            the test data directory on every node (fs prefix)
#
# Conventions as in nixos-tests/scenarios/lib.sh: every check that fails
# calls `fail` saying what was expected and what came instead.

set -euo pipefail

SCENARIO=$(basename "$0" .sh)
for v in FLEET_PID1S FLEET_NETNS FLEET_BRIDGE FLEET_PORTS FLEET_IPS FLEET_NAME \
         FLEET_MAX_STALENESS FLEET_ROOT_KEY FLEET_CTL FLEET_FIGURES FLEET_TD; do
    [ -n "${!v:-}" ] || { echo "[$SCENARIO] FAIL: $v is not set: run me with scripts/fleet-test.sh" >&2; exit 1; }
done
read -r -a PID1S <<<"$FLEET_PID1S"
read -r -a PORTS <<<"$FLEET_PORTS"
read -r -a IPS <<<"$FLEET_IPS"
NODES=${#PID1S[@]}
AUD=fleet:$FLEET_NAME
WORK=$(mktemp -d /tmp/strata-fleet-scenario.XXXXXX)
# Scenarios that start background work add their own cleanup and call this.
cleanup_work() { rm -rf "$WORK"; }
trap cleanup_work EXIT

log() { printf '[%s] %s\n' "$SCENARIO" "$*"; }
fail() {
    printf '[%s] FAIL: %s\n' "$SCENARIO" "$*" >&2
    exit 1
}
pass() { printf '[%s] OK\n' "$SCENARIO"; }

now_ms() { date +%s%3N; }

# pid1 N: node N's PID 1 on the host (nodes are numbered from 1).
pid1() {
    [ "$1" -ge 1 ] && [ "$1" -le "$NODES" ] || fail "no node $1 (have 1..$NODES)"
    echo "${PID1S[$(($1 - 1))]}"
}

# on_node N CMD...: runs CMD inside node N (all the namespaces of its PID 1)
# with a clean environment; pass variables with `env VAR=value CMD...`.
on_node() {
    local p
    p=$(pid1 "$1")
    shift
    nsenter -t "$p" -m -u -i -n -p -C -r -w -- \
        /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 TERM=dumb "$@"
}

# ctl N ARGS...: strata-ctl on node N, as root (an administrator).
ctl() {
    local n=$1
    shift
    on_node "$n" strata-ctl "$@"
}

# ctl_tok N TOKEN ARGS...: strata-ctl on node N presenting TOKEN.
ctl_tok() {
    local n=$1 t=$2
    shift 2
    on_node "$n" env STRATA_TOKEN="$t" strata-ctl "$@"
}

# etcdctl_on N ARGS...: etcdctl on node N, talking to its own member.
etcdctl_on() {
    local n=$1
    shift
    on_node "$n" env ETCDCTL_API=3 etcdctl --endpoints=http://127.0.0.1:2379 \
        --dial-timeout=2s --command-timeout=3s "$@"
}

# run, expect_rc, ok, jget, wait_until: the single-node scenarios' own.
# shellcheck source=nixos-tests/scenarios/checks.sh
. "$(dirname "${BASH_SOURCE[0]}")/../scenarios/checks.sh"

# ------------------------------------------------------------ network -----
# partition N: cut node N off the bridge (its port leaves the bridge: every
# frame to or from it is dropped; its own link stays up, so nothing inside
# the node notices but silence). heal N: put it back.
partition() { ip -n "$FLEET_NETNS" link set "${PORTS[$(($1 - 1))]}" nomaster; }
heal() { ip -n "$FLEET_NETNS" link set "${PORTS[$(($1 - 1))]}" master "$FLEET_BRIDGE"; }

# ---------------------------------------------------------------- etcd ----
etcd_stop() { on_node "$1" systemctl stop etcd.service; }
# Returns once the member is up (Type=notify: it has joined the cluster).
etcd_start() { on_node "$1" timeout 60 systemctl start etcd.service; }
# etcd_healthy N: node N's member answers a linearizable read (it has a leader).
etcd_healthy() { etcdctl_on "$1" endpoint health >/dev/null 2>&1; }
etcd_unhealthy() { ! etcd_healthy "$1"; }
cluster_healthy() { etcdctl_on "$1" endpoint health --cluster >/dev/null 2>&1; }

# -------------------------------------------------------------- strata ----
# fleet_token N [TTL]: a fleet token issued on node N for fs under
# $FLEET_TD; prints issue's JSON ({"token","cap_id","expires"}).
fleet_token() {
    ctl "$1" issue --service fs --actions list,stat,open,read --path-prefix "$FLEET_TD" \
        --ttl "${2:-900}" --aud "$AUD"
}
# local_token N [TTL]: a node-local token (no fleet audience) of node N.
local_token() {
    ctl "$1" issue --service fs --actions list,stat,open,read --path-prefix "$FLEET_TD" \
        --ttl "${2:-900}"
}
# revoke_timed N CAP_ID: `strata-ctl revoke CAP_ID` on node N, as root;
# ACK_MS is when it returned, read on the node right after it (not after
# nsenter's own exit); OUT/RC/ERR as run sets them. A later refusal's time
# minus ACK_MS is the propagation latency (<= 0: refused before the
# acknowledgement reached the client).
revoke_timed() {
    run on_node "$1" sh -c 'strata-ctl revoke "$1"; rc=$?; date +%s%3N; exit $rc' _ "$2"
    ACK_MS=$(printf '%s\n' "$OUT" | tail -n 1)
    OUT=$(printf '%s\n' "$OUT" | sed '$d')
    [ "$RC" = 0 ] || fail "revoke $2 on node-$1: exit $RC: $OUT $ERR"
}
# stat_on N TOKEN: fs.stat of the test data on node N with TOKEN (raw form:
# the envelope on stdout, exit 10+code on an error answer).
stat_on() { ctl_tok "$1" "$2" fs.stat "{\"path\":\"$FLEET_TD/hello.txt\"}"; }

# wait_fleet_fresh N...: waits (30 s at most) until `strata-ctl fleet
# status` on each node N exits 0 with state fresh. Clobbers OUT/RC/ERR.
wait_fleet_fresh() {
    local n i
    for n in "$@"; do
        i=0
        while :; do
            run ctl "$n" fleet status
            # A usage error will not go away by waiting.
            [ "$RC" != 2 ] || fail "node-$n: 'strata-ctl fleet status' is a usage error (a build without the fleet?): $ERR"
            [ "$RC" = 0 ] && [ "$(printf '%s' "$OUT" | jq -r .state 2>/dev/null)" = fresh ] && break
            i=$((i + 1))
            [ "$i" -le 150 ] || fail "node-$n's fleet not fresh after 30 s: exit $RC, $OUT $ERR"
            sleep 0.2
        done
    done
}

# poll_start NAME N TOKEN FIRST WANT [TIMEOUT_MS]: starts, in the
# background, node N's poller (poll.sh, installed by the runner): fs.stat
# with TOKEN every few ms until the answer's exit status is FIRST (it then
# writes "first <ms>"), then until it is WANT ("<ms> <rc> <answer>"). Any
# other status is "unexpected <ms> <rc> <answer>". Output in $WORK/NAME.
poll_start() {
    local name=$1 n=$2 t=$3 first=$4 want=$5 timeout=${6:-10000}
    on_node "$n" env STRATA_TOKEN="$t" POLL_PATH="$FLEET_TD/hello.txt" POLL_FIRST="$first" \
        POLL_WANT="$want" POLL_TIMEOUT_MS="$timeout" bash /opt/strata-fleet/poll.sh \
        >"$WORK/$name" 2>&1 &
    echo $! >"$WORK/$name.pid"
}
# poll_wait_first NAME: waits until the poller has seen its FIRST status.
poll_wait_first() {
    wait_until 15 "poller $1 to see its first status ($(cat "$WORK/$1" 2>/dev/null))" \
        grep -q '^first ' "$WORK/$1"
}
# poll_result NAME: waits for the poller to end and sets POLL_AT to the
# time (ms) at which it saw WANT and POLL_LINE to its report, or fails with
# what it saw instead. Not in a command substitution: the poller is a child
# of the scenario's shell, not of a subshell.
poll_result() {
    local pid rc=0
    pid=$(cat "$WORK/$1.pid")
    wait "$pid" || rc=$?
    POLL_LINE=$(grep -v '^first ' "$WORK/$1" | tail -n 1)
    [ "$rc" = 0 ] || fail "poller $1: ${POLL_LINE:-no output} (exit $rc)"
    POLL_AT=${POLL_LINE%% *}
}
# poll_answer: the answer (JSON envelope) of the last poll_result.
poll_answer() { printf '%s\n' "$POLL_LINE" | cut -d' ' -f3-; }

# fleet_of JSON: the `fleet` object wherever it sits in a status answer.
fleet_of() { printf '%s' "$1" | jq -c 'first(.. | objects | select(has("fleet")) | .fleet | objects) // empty'; }

# figure NAME JSON: records a figure for the runner's summary and
# target/fleet-figures.json.
figure() {
    jq -cn --arg n "$1" --argjson v "$2" --arg s "$SCENARIO" '{name: $n, scenario: $s, value: $v}' \
        >>"$FLEET_FIGURES"
    log "figure $1 = $2"
}

# percentiles FILE: {"n","median","p99","max","min"} of the numbers in FILE
# (one a line); nearest-rank percentiles.
percentiles() {
    sort -n "$1" | jq -cs '{n: length, min: .[0], max: .[-1],
        median: (if length % 2 == 1 then .[(length - 1) / 2] else (.[length / 2 - 1] + .[length / 2]) / 2 end),
        p99: .[((length * 0.99) | ceil) - 1]}'
}
