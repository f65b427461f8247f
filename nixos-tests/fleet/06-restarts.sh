#!/usr/bin/env bash
# Nothing acknowledged is lost (issue 15, "identity restarted, or etcd
# restarted"):
#  - revocations acknowledged on every node, one of them just before its
#    identity is killed (SIGKILL), the others around `systemctl restart`s of
#    identity;
#  - then every etcd member restarted at once;
#  - then fs restarted on node-1, and fs stopped on node-2 while a
#    revocation is made, started again by its next client;
# after each step every acknowledged revocation is refused on every node
# (code 2) and a never-revoked fleet token is still served. A restarted fs
# never serves a revoked token while it catches up (code 6 is allowed).
. "$(dirname "$0")/lib.sh"

wait_fleet_fresh 1 2 3
cursors=()
for n in 1 2 3; do cursors+=("$(on_node "$n" journalctl -n0 --show-cursor --no-pager | sed -n 's/^-- cursor: //p')"); done
C=$(jget "$(fleet_token 2)" .token)
REVOKED=()
# revoke_one ISSUER REVOKER: a fleet token of ISSUER revoked on REVOKER
# (acknowledged); remembered in REVOKED.
revoke_one() {
    local I
    I=$(fleet_token "$1") || fail "issue on node-$1: $I"
    ok stat_on 1 "$(jget "$I" .token)"
    ok ctl "$2" revoke "$(jget "$I" .cap_id)"
    [ "$(jget "$OUT" .status)" = revoked ] || fail "revoke on node-$2: $OUT"
    REVOKED+=("$(jget "$I" .token)")
}
# all_enforced WHEN: every revoked token refused with code 2 and the
# control served, on every node. A node still catching up may answer
# code 6 for a while; never 0 for a revoked token.
all_enforced() {
    local n t i
    for n in $(seq 1 "$NODES"); do
        wait_fleet_fresh "$n"
        for i in "${!REVOKED[@]}"; do
            t=${REVOKED[$i]}
            run stat_on "$n" "$t"
            [ "$RC" = 12 ] || fail "$1: revoked token #$i answered exit $RC on node-$n (want 12): $OUT"
        done
        run stat_on "$n" "$C"
        [ "$RC" = 0 ] || fail "$1: the control token is not served on node-$n: exit $RC $OUT"
    done
    log "$1: ${#REVOKED[@]} acknowledged revocations enforced on every node; control served"
}
identity_pid() { on_node "$1" systemctl show -p MainPID --value strata-identity.service; }

for n in 1 2 3; do revoke_one "$n" $((n % 3 + 1)); done

# identity restarted (clean) on node-1 and node-3, right after revocations.
revoke_one 2 1
ok on_node 1 systemctl restart strata-identity.service
revoke_one 1 3
ok on_node 3 systemctl restart strata-identity.service
# identity killed on node-2 right after it acknowledged a revocation.
revoke_one 3 2
before=$(identity_pid 2)
# The main process only: in these containers systemd cannot signal the
# rest of the cgroup (EIO), and identity has no other process.
ok on_node 2 systemctl kill --kill-who=main -s KILL strata-identity.service
back() { local p; p=$(identity_pid 2); [ "$p" -gt 0 ] && [ "$p" != "$before" ]; }
# Restart=on-failure, or the socket's next connection, brings it back.
ok ctl 2 identity.pubkey
wait_until 30 "node-2's identity back after SIGKILL" back
revoke_one 2 2
all_enforced "identity restarted on node-1 and node-3, killed on node-2"

# Every etcd member restarted at once: the cluster is down for a moment.
for n in 1 2 3; do ok on_node "$n" systemctl restart --no-block etcd.service; done
sleep 1
wait_until 60 "the etcd cluster healthy after restarting every member" cluster_healthy 1
# With the whole cluster down for a moment, every fs went stale: fleet
# tokens are refused until each has caught up again.
wait_fleet_fresh 1 2 3
revoke_one 1 2
all_enforced "every etcd member restarted"

# fs restarted on node-1; fs stopped on node-2 while a revocation is made
# on node-3, then started by the next request.
ok on_node 1 systemctl restart strata-fs.service
ok on_node 2 systemctl stop strata-fs.service
I=$(fleet_token 1) || fail "issue on node-1: $I"
late=$(jget "$I" .token)
ok ctl 3 revoke "$(jget "$I" .cap_id)"
REVOKED+=("$late")
# The first answers of node-2's new fs: code 6 while it syncs, then code 2.
deadline=$(($(now_ms) + 15000))
while :; do
    run stat_on 2 "$late"
    case $RC in
        12) break ;;
        16) ;;
        *) fail "node-2's fs, started after a revocation it missed, answered exit $RC: $OUT" ;;
    esac
    [ "$(now_ms)" -lt "$deadline" ] || fail "node-2's restarted fs did not refuse the missed revocation in 15 s: $OUT"
    sleep 0.05
done
all_enforced "fs restarted on node-1, fs started on node-2 after a revocation it missed"

# The revocation records are all still in etcd.
ok etcdctl_on 1 get --prefix "/strata/$FLEET_NAME/revoked/" --keys-only
have=$(printf '%s\n' "$OUT" | grep -c .) || true
[ "$have" -ge "${#REVOKED[@]}" ] || fail "etcd holds $have revocation records, want at least ${#REVOKED[@]}"

# Every stop above was a clean one: no service of the fleet ignored SIGTERM
# until systemd killed it (TimeoutStopSec=), which would make every restart
# or shutdown of a node wait for the timeout and lose what a clean exit
# finishes.
for n in 1 2 3; do
    slow=$(on_node "$n" journalctl --no-pager --after-cursor="${cursors[$((n - 1))]}" -u 'strata*' |
        grep "State 'stop-sigterm' timed out" || true)
    [ -z "$slow" ] || fail "node-$n: a Strata service did not exit on SIGTERM and was killed: $slow"
done
pass
