#!/usr/bin/env bash
# Build the prototype's identity and fs services (Gao-OS/StrataOS, the Go
# v0.3.0-mvp1 scaffold Strata replaces) so that `strata-bench --prototype DIR`
# can measure them side by side with Strata in the same run.
#
# The prototype's source is never part of this repository: pass a checkout
# of it, or a (bare) git directory holding the commit, e.g. the snapshot that
# `git clone --bare https://github.com/Gao-OS/StrataOS` makes. Built with
# Debian's Go (`apt-get install golang-go`, installed here when missing and
# run as root). The prototype uses the standard library only, so the build
# needs no network.
#
# Usage: scripts/build-prototype.sh SOURCE [OUT_DIR]
#   SOURCE   a git directory or checkout holding the commit (preferred: the
#            build is then of exactly that commit), or a plain source tree
#   OUT_DIR  where the binaries go (default target/prototype); it receives
#            strata-proto-identity and strata-proto-fs
# Environment:
#   STRATA_PROTOTYPE_COMMIT  commit taken from a git directory (default 728e1b5)
#
# Exit status: 0 when both binaries were built, 1 when the build failed, 2 on
# a usage error.

set -euo pipefail

usage() { sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0"; }
die() { printf 'build-prototype: %s\n' "$*" >&2; exit "${2:-2}"; }

[ $# -ge 1 ] && [ $# -le 2 ] || { usage >&2; exit 2; }
case $1 in -h|--help) usage; exit 0 ;; esac
SOURCE=$1
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${2:-$REPO/target/prototype}
COMMIT=${STRATA_PROTOTYPE_COMMIT:-728e1b5}

[ -e "$SOURCE" ] || die "no such source: $SOURCE (a checkout of Gao-OS/StrataOS or its git directory)"

if ! command -v go >/dev/null; then
    [ "$(id -u)" -eq 0 ] || die "Go is missing: run 'sudo apt-get install golang-go', or run this as root"
    printf 'build-prototype: installing golang-go\n' >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go >/dev/null
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/strata-prototype.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# A git directory or checkout gives exactly $COMMIT, whatever its work tree
# holds; a plain source tree is taken as it is.
GITDIR=""
if git --git-dir="$SOURCE" rev-parse --verify -q "$COMMIT^{commit}" >/dev/null 2>&1; then
    GITDIR=$SOURCE
elif git -C "$SOURCE" rev-parse --verify -q "$COMMIT^{commit}" >/dev/null 2>&1; then
    GITDIR=$(git -C "$SOURCE" rev-parse --absolute-git-dir)
fi
if [ -n "$GITDIR" ]; then
    mkdir -p "$WORK/src"
    git --git-dir="$GITDIR" archive "$COMMIT" | tar -x -C "$WORK/src"
    DESCRIBED="commit $(git --git-dir="$GITDIR" rev-parse --short=12 "$COMMIT") of $SOURCE"
elif [ -f "$SOURCE/go.mod" ]; then
    # Build a copy, so that the build leaves nothing in the tree.
    cp -a "$SOURCE/." "$WORK/src"
    DESCRIBED="source tree $SOURCE (not a git checkout: commit unknown)"
else
    die "$SOURCE is neither a git directory with commit $COMMIT nor a source tree (no go.mod)"
fi
[ -f "$WORK/src/cmd/identity/main.go" ] && [ -f "$WORK/src/cmd/fs/main.go" ] ||
    die "$DESCRIBED has no cmd/identity and cmd/fs: not the prototype?"

mkdir -p "$OUT"
# GOTOOLCHAIN=local: never download another Go; GOFLAGS=-mod=mod and
# GOPROXY=off: the module has no dependencies, and nothing is fetched.
export GOTOOLCHAIN=local GOPROXY=off GOFLAGS=-mod=mod CGO_ENABLED=0
export GOCACHE=$WORK/cache GOPATH=$WORK/gopath
for svc in identity fs; do
    (cd "$WORK/src" && go build -trimpath -o "$OUT/strata-proto-$svc" "./cmd/$svc") ||
        die "go build ./cmd/$svc failed ($DESCRIBED, $(go version))" 1
done
printf 'build-prototype: built %s/strata-proto-identity and strata-proto-fs from %s with %s\n' \
    "$OUT" "$DESCRIBED" "$(go version)"
