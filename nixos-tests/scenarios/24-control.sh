#!/usr/bin/env bash
# v0.3.2's control methods under real systemd: supervisor.svc.list shows
# systemd's view of the units; root stops fs (socket closed, so no
# connection starts it again) and starts it again; a non-root user is
# refused with code 3; the registry on registry.sock resolves fs's socket
# and refuses registration.
. "$(dirname "$0")/lib.sh"

fresh_start
make_testdata
if ! id "$STRATA_TEST_USER" >/dev/null 2>&1; then
    log "creating user $STRATA_TEST_USER"
    useradd --system --no-create-home --shell /bin/sh "$STRATA_TEST_USER"
fi

# Make fs run, so that the list has a pid to agree with systemd on.
STRATA_TOKEN=$(issue_token list "$TD")
export STRATA_TOKEN
ok strata-ctl ls "$TD"
wait_until 20 "strata-fs.service active" unit_up strata-fs.service

ok strata-ctl supervisor.svc.list
log "svc.list: $OUT"
[ "$(jget "$OUT" .ok)" = true ] || fail "svc.list: $OUT"
names=$(printf '%s' "$OUT" | jq -r '[.result.services[].name] | join(" ")')
[ "$names" = "identity fs supervisor" ] || fail "svc.list names '$names'"
fs_pid=$(jget "$OUT" '.result.services[] | select(.name == "fs") | .pid')
[ "$fs_pid" = "$(prop strata-fs.service MainPID)" ] || fail "svc.list fs pid $fs_pid, systemd says $(prop strata-fs.service MainPID)"
case $(jget "$OUT" '.result.services[] | select(.name == "fs") | .state') in
    Healthy | Unhealthy) ;;
    *) fail "fs runs but svc.list says $(jget "$OUT" '.result.services[] | select(.name == "fs") | .state')" ;;
esac
sup_pid=$(jget "$OUT" '.result.services[] | select(.name == "supervisor") | .pid')
[ "$sup_pid" = "$(prop strata-supervisor.service MainPID)" ] || fail "supervisor pid $sup_pid"
since=$(jget "$OUT" '.result.services[] | select(.name == "fs") | .since')
[ "$since" -gt 1700000000 ] || fail "fs since '$since' is not Unix seconds"
ok strata-ctl svc list
log "svc list works"

# Anyone may list; no one but root may start or stop (uid 65534 inside the
# supervisor's user namespace).
expect_rc 0 as_user "$STRATA_TEST_USER" strata-ctl supervisor.svc.list
expect_rc 13 as_user "$STRATA_TEST_USER" strata-ctl supervisor.svc.stop '{"name":"fs"}'
expect_rc 13 as_user "$STRATA_TEST_USER" strata-ctl supervisor.svc.start '{"name":"fs"}'
expect_rc 13 as_user "$STRATA_TEST_USER" strata-ctl svc stop identity
is_state strata-fs.service active || fail "a refused stop stopped fs"
log "a non-root user gets code 3"

# Unknown names, and the supervisor itself, are refused.
expect_rc 14 strata-ctl supervisor.svc.stop '{"name":"ssh"}'
expect_rc 11 strata-ctl supervisor.svc.stop '{"name":"supervisor"}'

# Root stops fs: the service and its socket go down.
ok strata-ctl supervisor.svc.stop '{"name":"fs","drain_ms":5000}'
log "svc.stop: $OUT"
[ "$(jget "$OUT" .result.state)" = Stopped ] || fail "after svc.stop: $OUT"
[ "$(jget "$OUT" .result.drained)" = true ] || fail "fs did not drain in 5 s: $OUT"
is_state strata-fs.service inactive || fail "strata-fs.service is $(active_state strata-fs.service)"
is_state strata-fs.socket inactive || fail "strata-fs.socket is $(active_state strata-fs.socket)"
[ ! -S "$STRATA_RUNTIME_DIR/fs.sock" ] || fail "fs.sock still exists after svc.stop"
expect_rc 1 strata-ctl ls "$TD"

# ...and starts it again: running at once, not on demand.
ok strata-ctl svc start fs
log "svc start: $OUT"
[ "$(jget "$OUT" .state)" = Healthy ] || fail "after svc.start: $OUT"
is_state strata-fs.service active || fail "strata-fs.service is $(active_state strata-fs.service)"
[ "$(jget "$OUT" .pid)" = "$(prop strata-fs.service MainPID)" ] || fail "svc.start pid"
wait_synced "fs after svc.start"
ok strata-ctl ls "$TD"
log "root stopped and started fs"

# The registry, on its own socket.
[ -S "$STRATA_RUNTIME_DIR/registry.sock" ] || fail "no registry.sock"
ok strata-ctl registry.resolve '{"service":"fs"}'
log "registry.resolve: $OUT"
[ "$(jget "$OUT" .result.endpoint)" = "unix://$STRATA_RUNTIME_DIR/fs.sock" ] || fail "resolve fs: $OUT"
[ "$(jget "$OUT" .result.socket)" = "$STRATA_RUNTIME_DIR/fs.sock" ] || fail "resolve fs: $OUT"
expect_rc 0 as_user "$STRATA_TEST_USER" strata-ctl registry.list
[ "$(printf '%s' "$OUT" | jq -r '.result.services | length')" = 4 ] || fail "registry.list: $OUT"
expect_rc 14 strata-ctl registry.resolve '{"service":"nope"}'
expect_rc 13 strata-ctl registry.register '{"service":"x","endpoint":"unix:///tmp/x.sock","api_v":1}'
log "registry answers"

# status names this node.
ok strata-ctl status
[ "$(jget "$OUT" .node_id)" = "$(cat /proc/sys/kernel/hostname)" ] || fail "node_id: $OUT"
jget "$OUT" .uptime_sec >/dev/null
pass
