# shellcheck shell=bash
# The Debian bookworm root file system that Strata's container runners boot
# under `systemd-nspawn -b`, and what they do with it: build it once into a
# cache, copy it per run, install the release binaries and unit files,
# boot it, find its PID 1, run commands in it, stop it. Sourced (never run)
# by scripts/container-test.sh (one container) and scripts/fleet-test.sh
# (three containers on a bridge).
#
# The sourcing script defines log and die, and sets REPO; it may set
# STRATA_CT_CACHE, STRATA_CT_MIRROR (see container-test.sh).

CT_CACHE=${STRATA_CT_CACHE:-/var/cache/strata}
CT_SUITE=bookworm
# Packages on top of debootstrap's minbase. Kept small on purpose: systemd
# and dbus to boot and to talk to PID 1, procps for ps/pgrep in scenarios,
# jq to read JSON answers (the NixOS tests add pkgs.jq likewise), passwd for
# useradd. For the fleet runner: iproute2 to give each container its
# address on the test's bridge, etcd-server and etcd-client (etcdctl) for
# the cluster. etcd.service is masked in the cached root (see
# ct_build_rootfs), so single-node containers never start it.
CT_PACKAGES=systemd,systemd-sysv,dbus,procps,jq,passwd,iproute2,etcd-server,etcd-client
# The cache is keyed by the package list and by how it is prepared: a
# change rebuilds it. The key is part of the directory's name, so that runs
# of branches with other package lists (sharing one machine) each keep
# their own cache instead of rebuilding each other's.
CT_STAMP="suite=$CT_SUITE packages=$CT_PACKAGES etcd=masked v=2"
CT_ROOTFS_CACHE=$CT_CACHE/rootfs-$CT_SUITE-$(printf '%s' "$CT_STAMP" | sha256sum | cut -c1-12)

# The Debian mirror the host's apt uses (deb822 .sources or one-line
# sources.list), so that this works wherever apt works.
ct_host_mirror() {
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

# Builds the cached root file system into $CT_ROOTFS_CACHE (replacing it).
ct_build_rootfs() {
    local mirror tmp
    mirror=${STRATA_CT_MIRROR:-$(ct_host_mirror)}
    tmp=$CT_CACHE/.rootfs-$CT_SUITE.tmp
    rm -rf "$tmp"
    log "debootstrap $CT_SUITE from $mirror (cached in $CT_ROOTFS_CACHE afterwards)"
    if ! debootstrap --variant=minbase --include="$CT_PACKAGES" "$CT_SUITE" "$tmp" "$mirror" \
            >"$CT_CACHE/debootstrap.log" 2>&1; then
        tail -n 30 "$CT_CACHE/debootstrap.log" >&2
        die "debootstrap failed (log: $CT_CACHE/debootstrap.log)"
    fi
    # Container hygiene: nothing to log in on (the runner uses nsenter), no
    # first-boot prompts, a hostname; apt lists are dead weight.
    chroot "$tmp" systemctl mask console-getty.service getty@tty1.service \
        systemd-firstboot.service >/dev/null 2>&1 || true
    # etcd only where a runner configures a cluster (scripts/fleet-test.sh
    # unmasks it in its copies): Debian enables it on install, and a lone
    # member with Debian's defaults has no business in the single-node
    # scenarios. Its data directory starts empty, so that a runner's
    # ETCD_INITIAL_CLUSTER_STATE=new makes a new cluster.
    chroot "$tmp" systemctl disable etcd.service >/dev/null 2>&1 || true
    chroot "$tmp" systemctl mask etcd.service >/dev/null 2>&1 ||
        die "cannot mask etcd.service in the new root file system"
    rm -rf "${tmp:?}"/var/lib/etcd/*
    echo strata-ct >"$tmp/etc/hostname"
    rm -rf "$tmp"/var/lib/apt/lists/* "$tmp"/var/cache/apt/*.bin
    echo "$CT_STAMP" >"$tmp/.strata-rootfs-stamp"
    rm -rf "$CT_ROOTFS_CACHE"
    mv "$tmp" "$CT_ROOTFS_CACHE"
}

# ct_copy_rootfs REBUILD DEST...: makes sure the cache exists and is current
# (rebuilt first when REBUILD is 1), then copies it to each DEST (which must
# not exist), so that runs never see each other's state. Cache creation is
# serialized between concurrent runs on one machine.
ct_copy_rootfs() {
    local rebuild=$1 dest
    shift
    mkdir -p "$CT_CACHE"
    exec 9>"$CT_CACHE/.lock"
    flock 9
    if [ "$rebuild" -eq 1 ] || [ "$(cat "$CT_ROOTFS_CACHE/.strata-rootfs-stamp" 2>/dev/null)" != "$CT_STAMP" ]; then
        ct_build_rootfs
    else
        log "using cached root file system $CT_ROOTFS_CACHE"
    fi
    for dest in "$@"; do
        cp -a --reflink=auto "$CT_ROOTFS_CACHE" "$dest"
    done
    flock -u 9
    exec 9>&-
}

# ct_install_strata ROOT TARGET_DIR BIN...: what a Debian package of Strata
# would install: binaries where a package puts them, units unchanged where a
# package puts them (/usr/lib/systemd/system, so /etc stays free for
# drop-ins), sysusers and tmpfiles snippets; then the system users, as the
# package's postinst would, and a machine id of the root's own.
ct_install_strata() {
    local root=$1 target=$2 b u unitdir
    shift 2
    for b in "$@"; do
        install -m 0755 "$target/release/$b" "$root/usr/bin/$b"
    done
    unitdir=$root/usr/lib/systemd/system
    mkdir -p "$unitdir" "$root/usr/lib/sysusers.d" "$root/usr/lib/tmpfiles.d"
    for u in "$REPO"/systemd/*.service "$REPO"/systemd/*.socket "$REPO"/systemd/*.target; do
        [ -f "$u" ] && install -m 0644 "$u" "$unitdir/"
    done
    [ -f "$REPO/systemd/strata-sysusers.conf" ] &&
        install -m 0644 "$REPO/systemd/strata-sysusers.conf" "$root/usr/lib/sysusers.d/strata.conf"
    [ -f "$REPO/systemd/strata-tmpfiles.conf" ] &&
        install -m 0644 "$REPO/systemd/strata-tmpfiles.conf" "$root/usr/lib/tmpfiles.d/strata.conf"
    # Also done at boot by systemd-sysusers.service, but only when /etc
    # needs an update.
    chroot "$root" systemd-sysusers >/dev/null
    # Journal files are named after the machine id.
    od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$root/etc/machine-id"
    echo >>"$root/etc/machine-id"
}

# nspawn keeps propagation mounts in /run/systemd/nspawn and wants a tmpfs
# there; /run on these hosts is a plain directory (the host is not run by
# systemd).
ct_prepare_host() {
    mkdir -p /run/systemd/nspawn
    if ! mountpoint -q /run/systemd/nspawn; then
        mount -t tmpfs -o mode=0755 tmpfs /run/systemd/nspawn
    fi
}

# ct_find_pid1 NSPAWN_PID: the container's PID 1 is the descendant of nspawn
# whose pid in its own pid namespace is 1 (last field of NSpid).
ct_find_pid1() {
    local p nspid
    for p in $(pgrep -P "$1" 2>/dev/null) \
             $(for c in $(pgrep -P "$1" 2>/dev/null); do pgrep -P "$c"; done); do
        nspid=$(awk '/^NSpid:/ { print $NF }' "/proc/$p/status" 2>/dev/null)
        if [ "$nspid" = 1 ]; then echo "$p"; return 0; fi
    done
    return 1
}

# ct_wait_pid1 NSPAWN_PID CONSOLE_LOG: prints the PID 1 once it exists.
ct_wait_pid1() {
    local pid1=""
    for _ in $(seq 1 100); do
        kill -0 "$1" 2>/dev/null || { cat "$2" >&2; die "systemd-nspawn exited"; }
        pid1=$(ct_find_pid1 "$1") && break
        sleep 0.1
    done
    [ -n "$pid1" ] || die "could not find the container's PID 1"
    echo "$pid1"
}

# ct_exec PID1 CMD...: runs a command inside the container: every namespace
# of its PID 1, a clean environment (nothing of the host's leaks in), cwd /.
ct_exec() {
    local pid1=$1
    shift
    nsenter -t "$pid1" -m -u -i -n -p -C -r -w -- \
        /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 TERM=dumb "$@"
}

# ct_wait_booted PID1 CONSOLE_LOG NAME: waits until the container's systemd
# is running (or degraded, which is said, with the failed units).
ct_wait_booted() {
    local state=""
    for _ in $(seq 1 240); do
        state=$(ct_exec "$1" systemctl is-system-running 2>/dev/null) || true
        case $state in
            running|degraded) break ;;
        esac
        sleep 0.5
    done
    case $state in
        running) log "$3 is running" ;;
        degraded)
            log "$3 is degraded (not fatal); failed units:"
            ct_exec "$1" systemctl --no-pager --failed >&2 || true ;;
        *)
            cat "$2" >&2
            die "$3 did not finish booting (state: '${state:-none}')" ;;
    esac
}

# ct_stop NSPAWN_PID PID1 NAME: clean shutdown first (systemd's SIGRTMIN+3
# = halt), then force after 20 s.
ct_stop() {
    local nspawn=$1 pid1=$2
    [ -n "$nspawn" ] && kill -0 "$nspawn" 2>/dev/null || return 0
    if [ -n "$pid1" ]; then kill -s RTMIN+3 "$pid1" 2>/dev/null; fi
    for _ in $(seq 1 100); do
        kill -0 "$nspawn" 2>/dev/null || break
        sleep 0.2
    done
    if kill -0 "$nspawn" 2>/dev/null; then
        log "$3 did not stop in 20 s; killing it"
        kill -KILL "$nspawn" 2>/dev/null
        [ -n "$pid1" ] && kill -KILL "$pid1" 2>/dev/null
    fi
    wait "$nspawn" 2>/dev/null
}
