#!/usr/bin/env bash
# After `systemctl start strata.target`: the three sockets listen, the
# supervisor runs, and identity and fs are NOT started (socket activation),
# even after a few supervisor check intervals. The first call starts them.
. "$(dirname "$0")/lib.sh"

fresh_start
for s in $UNITS_SOCKETS; do
    [ "$(active_state "$s")" = active ] || fail "$s is $(active_state "$s"), want active"
done
# "listening": nobody has taken the socket yet; the supervisor's is
# "running" (its service holds it).
for s in strata-identity.socket strata-fs.socket; do
    [ "$(prop "$s" SubState)" = listening ] || fail "$s substate $(prop "$s" SubState), want listening"
done
for n in identity fs supervisor; do
    [ -S "$STRATA_RUNTIME_DIR/$n.sock" ] || fail "no socket $STRATA_RUNTIME_DIR/$n.sock"
done
[ "$(active_state strata-supervisor.service)" = active ] || fail "supervisor not active"

# Longer than one supervisor interval (5 s): the supervisor must see the
# services as idle and leave them alone, not start them by probing.
sleep 7
for s in strata-identity.service strata-fs.service; do
    st=$(active_state "$s")
    [ "$st" = inactive ] || fail "$s is '$st' before any call; want inactive (started on demand only)"
done
ok strata-ctl status
for n in identity fs; do
    st=$(jget "$OUT" ".services.$n.state")
    [ "$st" = idle ] || fail "supervisor.status says $n is '$st' while not started; want idle ($OUT)"
done
log "identity and fs inactive, supervisor reports them idle"

# First call to fs (fs.health needs no token) starts fs.
ok strata-ctl health fs
[ "$(jget "$OUT" .status)" = ok ] || fail "fs.health: $OUT"
[ "$(active_state strata-fs.service)" = active ] || fail "fs not active after a call"
# First call to identity starts identity.
ok strata-ctl health identity
[ "$(active_state strata-identity.service)" = active ] || fail "identity not active after a call"
log "first calls started fs and identity"

# The public key file is published (when the tmpfiles rule is in place).
if [ "$(stat -c %a "$STRATA_RUNTIME_DIR")" = 1775 ]; then
    wait_until 10 "identity.pub written" test -s "$STRATA_RUNTIME_DIR/identity.pub"
    ok strata-ctl identity.pubkey
    key=$(jget "$OUT" .result.public_key)
    [ "$(cat "$STRATA_RUNTIME_DIR/identity.pub")" = "$key" ] ||
        fail "identity.pub differs from identity.pubkey ($key)"
    perm=$(stat -c %a "$STRATA_RUNTIME_DIR/identity.pub")
    [ "$perm" = 644 ] || [ "$perm" = 444 ] || fail "identity.pub mode $perm, want world-readable"
    log "identity.pub matches identity.pubkey"
fi
pass
