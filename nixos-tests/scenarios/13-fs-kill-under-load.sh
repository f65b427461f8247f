#!/usr/bin/env bash
# Kill fs under load: STRATA_LOAD_CONNS (32) clients run mixed fs.read /
# fs.list on a known tree for STRATA_LOAD_DURATION (60) s, every answer
# checked against the files on disk, while `systemctl kill -s KILL
# strata-fs.service` runs every STRATA_LOAD_KILL_EVERY (5) s. Afterwards:
#  - no wrong answer, and no error answer where success was due;
#  - the only failures are requests whose connection the kill broke: at most
#    one per connection per kill, each within 3 s after a kill;
#  - no connection attempt was refused (systemd held the socket);
#  - fs's RSS after the run is within 20% of a fresh fs's.
# RSS, precisely: VmRSS of strata-fs's MainPID read from /proc/PID/status.
# "Fresh": right after `systemctl restart strata-fs.service`, one fs.health
# call, fs synced with identity, 1 s settle. "After the run": the fs
# running once the load has stopped and its clients have closed their
# handles and disconnected (2 s settle) — the instance started after the
# last kill, which served the rest of the load. The VmRSS of every killed
# instance, read just before its kill (under load), is logged too.
. "$(dirname "$0")/lib.sh"
command -v strata-loadgen >/dev/null 2>&1 || fail "strata-loadgen is not in PATH ($PATH)"

DURATION=${STRATA_LOAD_DURATION:-60}
CONNS=${STRATA_LOAD_CONNS:-32}
KILL_EVERY=${STRATA_LOAD_KILL_EVERY:-5}
# How far above a fresh fs's VmRSS the RSS after the run may be (percent).
RSS_MAX_PCT=${STRATA_LOAD_RSS_MAX_PCT:-20}
# The first kill comes half an interval into the load, so that
# DURATION/KILL_EVERY kills (12 by default) all land while it runs.
EVERY_MS=$(awk -v k="$KILL_EVERY" 'BEGIN { print int(k * 1000) }')
FIRST_MS=$((EVERY_MS / 2))
FIRST_KILL=$(awk -v f="$FIRST_MS" 'BEGIN { print f / 1000 }')
# Kills that fit: the last one at least 0.5 s before the load ends.
EXPECTED_KILLS=$(((DURATION * 1000 - 500 - FIRST_MS) / EVERY_MS + 1))
LOAD=$TD/load
WORK=$(mktemp -d)
killer=""
cleanup() {
    [ -z "$killer" ] || kill "$killer" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

rss_of() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || true; }
anon_of() { awk '/^RssAnon:/ { print $2 }' "/proc/$1/status" 2>/dev/null || true; }
usec() { systemd-analyze timespan "$1" | awk -F': ' '/μs:|us:/ { print $2; exit }'; }

# systemd's start rate limit counts every start of fs, by Restart= or by
# the socket. Kills every KILL_EVERY s must stay below StartLimitBurst
# starts per StartLimitIntervalSec, or fs ends up failed (and its socket
# with it) in the middle of the run.
burst=$(prop strata-fs.service StartLimitBurst)
interval=$(prop strata-fs.service StartLimitIntervalUSec)
interval_us=$(usec "$interval")
starts=$(awk -v i="$interval_us" -v k="$EVERY_MS" 'BEGIN { n = i / (k * 1000); print int(n) + (n > int(n)) + 1 }')
log "start limit: $burst starts per $interval; kills every ${KILL_EVERY}s start fs at most $starts times in that window"
[ "$starts" -lt "$burst" ] ||
    fail "killing fs every ${KILL_EVERY}s would hit its start limit ($burst per $interval): raise StartLimitBurst= or lower StartLimitIntervalSec= in strata-fs.service"

fresh_start
make_testdata
strata-loadgen make-tree --dir "$LOAD" --files 48 >/dev/null
STRATA_TOKEN=$(issue_token open,read,list "$LOAD" 3600)
export STRATA_TOKEN

# A fresh fs: restart, synced, then one request of each kind the load
# makes (cat, ls), settle. Measured after those, so that the comparison is
# about memory the load kept, not about code pages and first-use caches a
# process that has only answered fs.health has not touched yet.
systemctl restart strata-fs.service
ok strata-ctl health fs
wait_synced "fresh fs"
fresh_pid=$(prop strata-fs.service MainPID)
rss_idle=$(rss_of "$fresh_pid")
ok strata-ctl cat "$LOAD/text-0000.txt" >/dev/null
ok strata-ctl ls "$LOAD"
sleep 1
rss_fresh=$(rss_of "$fresh_pid")
anon_fresh=$(anon_of "$fresh_pid")
[ -n "$rss_fresh" ] || fail "cannot read VmRSS of fs (pid $fresh_pid)"
n0=$(prop strata-fs.service NRestarts)
log "fresh fs: pid $fresh_pid, VmRSS $rss_fresh kB after one cat and one ls ($rss_idle kB after only fs.health)"

t0=$(date +%s%3N)
log "load: $CONNS connections for ${DURATION}s; SIGKILL fs every ${KILL_EVERY}s from ${FIRST_KILL}s"
strata-loadgen mixed --conns "$CONNS" --duration "$DURATION" --dir "$LOAD" \
    --report "$WORK/report.json" >"$WORK/stdout" 2>"$WORK/stderr" &
loadgen=$!

# The killer: kills at fixed times from the start of the load (so that
# systemctl's own latency does not drift them), one line each in
# $WORK/kills: "ms pid rss_kB" (pid 0: fs was not running at that moment,
# nothing killed).
(
    k=0
    while :; do
        at=$((t0 + FIRST_MS + k * EVERY_MS))
        [ "$at" -lt $((t0 + DURATION * 1000 - 500)) ] || break
        now=$(date +%s%3N)
        [ "$at" -le "$now" ] || sleep "$(awk -v d=$((at - now)) 'BEGIN { printf "%.3f", d / 1000 }')"
        pid=$(prop strata-fs.service MainPID)
        rss=0
        if [ "$pid" -gt 0 ]; then rss=$(rss_of "$pid"); fi
        t=$(date +%s%3N)
        systemctl kill -s KILL strata-fs.service 2>/dev/null || true
        echo "$t $pid ${rss:-0}" >>"$WORK/kills"
        k=$((k + 1))
    done
) &
killer=$!

set +e
wait "$loadgen"
lrc=$?
set -e
wait "$killer" 2>/dev/null || true
killer=""
[ -s "$WORK/report.json" ] || fail "strata-loadgen wrote no report (exit $lrc): $(cat "$WORK/stderr")"
R=$(cat "$WORK/report.json")
log "report: $(printf '%s' "$R" | jq -c 'del(.failure_times_ms)')"

kills=$(awk '$2 > 0' "$WORK/kills" | wc -l)
missed=$(awk '$2 == 0' "$WORK/kills" | wc -l)
log "kills: $kills (fs not running at $missed more); VmRSS of each killed fs (kB): $(awk '$2 > 0 { printf "%s ", $3 }' "$WORK/kills")"
[ "$kills" -ge $((EXPECTED_KILLS - 1)) ] || fail "only $kills kills landed in ${DURATION}s (expected $EXPECTED_KILLS)"

# 1. Every answer right.
wrong=$(jget "$R" .wrong)
errors=$(jget "$R" .errors_total)
[ "$wrong" = 0 ] || fail "$wrong wrong answers: $(printf '%s' "$R" | jq -c .wrong_examples)"
[ "$errors" = 0 ] || fail "$errors error answers where success was due: $(printf '%s' "$R" | jq -c .error_examples)"

# 2. Failures: only connections broken by a kill.
failures=$(jget "$R" .failures_total)
bound=$((CONNS * kills))
[ "$failures" -le "$bound" ] ||
    fail "$failures failed requests, more than one per connection per kill ($CONNS x $kills = $bound): $(printf '%s' "$R" | jq -c .failures)"
kinds=$(printf '%s' "$R" | jq -r '.failures | keys | join(",")')
case ",$kinds," in ,,|,connection_lost,) ;; *) fail "failures other than lost connections: $(printf '%s' "$R" | jq -c .failures)" ;; esac
kill_times=$(awk '$2 > 0 { print $1 }' "$WORK/kills" | jq -s -c .)
stray=$(printf '%s' "$R" | jq --argjson k "$kill_times" \
    '[.failure_times_ms[] as $t | select(all($k[]; ($t - .) < 0 or ($t - .) > 3000))] | length')
[ "$stray" = 0 ] || fail "$stray failures not within 3 s after a kill (kills at $kill_times)"

# 3. No refusal.
refusals=$(jget "$R" .refusals)
[ "$refusals" = 0 ] || fail "$refusals connection attempts refused: $(printf '%s' "$R" | jq -c .refusal_examples)"
[ "$lrc" = 0 ] || fail "strata-loadgen exited $lrc: $(cat "$WORK/stderr")"

# fs is up, restarted by systemd once per kill (or started by its socket),
# and neither it nor its socket failed.
[ "$(active_state strata-fs.socket)" = active ] || fail "strata-fs.socket is $(active_state strata-fs.socket)"
ok strata-ctl health fs
[ "$(active_state strata-fs.service)" = active ] || fail "fs is $(active_state strata-fs.service) after the run"
restarts=$(($(prop strata-fs.service NRestarts) - n0))

# 4. RSS after the run: the load generator has closed its handles and
# disconnected; let fs settle.
sleep 2
after_pid=$(prop strata-fs.service MainPID)
rss_after=$(rss_of "$after_pid")
[ -n "$rss_after" ] || fail "cannot read VmRSS of fs (pid $after_pid)"
anon_after=$(anon_of "$after_pid")
limit=$((rss_fresh * (100 + RSS_MAX_PCT) / 100))
log "VmRSS: fresh $rss_fresh kB, after the run $rss_after kB (pid $after_pid; limit $limit kB); of which anonymous: fresh $anon_fresh kB, after $anon_after kB"
[ "$rss_after" -le "$limit" ] || fail "fs VmRSS after the run $rss_after kB is more than $RSS_MAX_PCT% above a fresh fs's $rss_fresh kB (anonymous memory $anon_fresh -> $anon_after kB)"

log "held: $(jget "$R" .ok) checked answers ($(jget "$R" .ok_per_s)/s) from $CONNS connections in $(jget "$R" .duration_s) s; $kills kills, $restarts restarts by systemd; $failures requests lost in flight (bound $bound), $(jget "$R" .handle_lost) handles reopened, 0 wrong, 0 refused; latency p50 $(jget "$R" .latency_ms.p50) ms p99 $(jget "$R" .latency_ms.p99) ms max $(jget "$R" .latency_ms.max) ms"
pass
