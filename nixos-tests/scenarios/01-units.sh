#!/usr/bin/env bash
# The unit files load cleanly (`systemd-analyze verify`), strata.target can be
# enabled through its [Install] section, and /run/strata is laid out as the
# units intend (sockets 0666, the directory sticky so that identity can write
# identity.pub but cannot touch the sockets).
. "$(dirname "$0")/lib.sh"

units="strata.target $UNITS_SOCKETS $UNITS_SERVICES"
files=""
for u in $units; do
    f=$(prop "$u" FragmentPath)
    [ -n "$f" ] && [ -f "$f" ] || fail "$u is not installed (FragmentPath '$f')"
    [ "$(prop "$u" LoadState)" = loaded ] || fail "$u: LoadState $(prop "$u" LoadState)"
    files="$files $f"
done

log "systemd-analyze verify$files"
# verify prints nothing for clean units; anything it says about OUR units is
# a finding (it may also mention unrelated units of the host, ignored here).
# shellcheck disable=SC2086
run systemd-analyze verify $files
findings=$(printf '%s\n%s\n' "$OUT" "$ERR" | grep -i 'strata' || true)
[ "$RC" = 0 ] || fail "systemd-analyze verify exited $RC: $OUT $ERR"
[ -z "$findings" ] || fail "systemd-analyze verify complained: $findings"

# Enabling: the [Install] sections must link the members into strata.target.
# --runtime: the links go to /run/systemd/system, so the machine's persistent
# configuration is untouched (and this works where /etc/systemd/system is
# read-only, as on NixOS).
ok systemctl enable --runtime strata.target
for u in strata.target $UNITS_SOCKETS strata-supervisor.service; do
    st=$(systemctl is-enabled "$u" 2>/dev/null || true)
    case $st in
        enabled|enabled-runtime|static|linked|linked-runtime|alias) ;;
        *) fail "after 'systemctl enable --runtime strata.target', $u is '$st'" ;;
    esac
done
ok systemctl disable --runtime strata.target

fresh_start
for n in identity fs supervisor registry; do
    s=$STRATA_RUNTIME_DIR/$n.sock
    [ -S "$s" ] || fail "$s is not a socket"
    mode=$(stat -c %a "$s")
    [ "$mode" = 666 ] || fail "$s has mode $mode, want 666 (any local user connects)"
done
# The credential socket is for systemd's LoadCredential= alone.
c=$STRATA_RUNTIME_DIR/credentials.sock
[ -S "$c" ] || fail "$c is not a socket"
[ "$(stat -c %a:%U "$c")" = 600:root ] || fail "$c is $(stat -c %a:%U "$c"), want 600:root"
dmode=$(stat -c %a "$STRATA_RUNTIME_DIR")
log "$STRATA_RUNTIME_DIR: mode $dmode owner $(stat -c %U:%G "$STRATA_RUNTIME_DIR")"
case $dmode in
    1775) [ "$(stat -c %G "$STRATA_RUNTIME_DIR")" = strata-identity ] ||
              fail "$STRATA_RUNTIME_DIR is mode 1775 but not group strata-identity" ;;
    755) log "note: tmpfiles rule not applied; identity cannot write identity.pub" ;;
    *) fail "$STRATA_RUNTIME_DIR has unexpected mode $dmode" ;;
esac
pass
