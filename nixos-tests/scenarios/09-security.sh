#!/usr/bin/env bash
# `systemd-analyze security` rates every service at an overall exposure of
# 1.0 or less (issue 13: each relaxation has its reason in the unit file).
. "$(dirname "$0")/lib.sh"
command -v systemd-analyze >/dev/null || fail "systemd-analyze not in PATH"

max=1.0
bad=""
for u in $UNITS_SERVICES; do
    run systemd-analyze security --no-pager "$u"
    line=$(printf '%s\n' "$OUT" | grep 'Overall exposure level' || true)
    # e.g. "→ Overall exposure level for strata-fs.service: 1.2 OK 🙂"
    level=$(printf '%s\n' "$line" | sed -n 's/.*: \([0-9][0-9]*\.[0-9]*\).*/\1/p')
    [ -n "$level" ] || fail "no exposure level for $u: $OUT $ERR"
    log "$u: exposure $level"
    if awk -v l="$level" -v m="$max" 'BEGIN { exit !(l > m) }'; then
        bad="$bad $u=$level"
        # What is left, for the report.
        printf '%s\n' "$OUT" | grep -E '^[[:space:]]*✗' | sed 's/^/    /' || true
    fi
done
[ -z "$bad" ] || fail "exposure above $max:$bad"
pass
