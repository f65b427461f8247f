#!/usr/bin/env bash
# Runs the package's checkPhase (package.nix) the way the Nix build sandbox
# runs it, on a machine that cannot run Nix builds: `cargo build` then
# `cargo test --release --workspace`, offline against vendored sources, as
# an unprivileged build user with nothing a host service provides.
#
# What the sandbox gives a build, and how this script reproduces it:
#   uid 1000, gid 100, no supplementary groups
#                                  setpriv --reuid/--regid/--clear-groups,
#                                  no inheritable capabilities, no_new_privs
#   no network but loopback        a fresh network namespace, lo up
#   HOME=/homeless-shelter         set, and the directory does not exist
#   TMPDIR=/build (private)        the build directory, owned by the build user
#   no /run, so no /run/strata     an empty read-only tmpfs on /run
#   an empty /tmp                  an empty tmpfs on /tmp, mode 1777
#   no systemd as PID 1            a fresh PID namespace: PID 1 is this script
#   /etc/passwd, /etc/group        the sandbox's three users and groups
#   vendored crates, --frozen      `cargo vendor`, source replacement as
#                                  nixpkgs' cargoSetupHook writes it
#   toolchain read-only            the sysroot bind-mounted read-only
#
# What it does not reproduce: the host's /usr and /bin stay visible (the
# sandbox has only the store and /bin/sh), the toolchain is the host's, not
# nixpkgs', and the install and fixup phases do not run. Those only a Nix
# build shows (docs/nixos.md, "What is proven where").
#
# The source is what the package's `src` fileset selects (package.nix's
# sourcePaths), so a test that reads a file the package does not ship fails
# here as it would in `nix build`.
#
# Needs root (namespaces, mounts) and network access to crates.io for
# `cargo vendor`. Usage: sudo scripts/nix-sandbox-test.sh [--keep]
set -euo pipefail

repo=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
keep=0
for arg in "$@"; do
	case $arg in
	--keep) keep=1 ;;
	--inner) ;; # handled below
	*)
		echo "nix-sandbox-test: unknown option $arg" >&2
		exit 2
		;;
	esac
done

build_uid=1000
build_gid=100

if [ "${1:-}" = "--inner" ]; then
	# Inside the new namespaces, still root: build the sandbox's view.
	work=$STRATA_SANDBOX_WORK
	sysroot=$STRATA_SANDBOX_SYSROOT
	mount --make-rprivate /
	mount -t tmpfs -o mode=0755,size=1m tmpfs /run
	mount -o remount,ro /run
	mount -t tmpfs -o mode=1777,size=512m tmpfs /tmp
	mkdir -p "$work/etc" "$work/toolchain"
	cat >"$work/etc/passwd" <<-'EOF'
		root:x:0:0:Nix build user:/build:/noshell
		nixbld:x:1000:100:Nix build user:/build:/noshell
		nobody:x:65534:65534:Nobody:/:/noshell
	EOF
	cat >"$work/etc/group" <<-'EOF'
		root:x:0:
		nixbld:!:100:
		nogroup:x:65534:
	EOF
	mount --bind "$work/etc/passwd" /etc/passwd
	mount --bind "$work/etc/group" /etc/group
	mount --bind -o ro "$sysroot" "$work/toolchain"
	mount -o remount,bind,ro "$work/toolchain"
	ip link set lo up
	cores=$(nproc)
	triple=$(rustc --print host-tuple 2>/dev/null || rustc -vV | sed -n 's/^host: //p')
	cd "$work/build/source"
	exec setpriv --reuid="$build_uid" --regid="$build_gid" --clear-groups \
		--inh-caps=-all --no-new-privs \
		env -i \
		HOME=/homeless-shelter \
		TMPDIR="$work/build" TMP="$work/build" TEMP="$work/build" TEMPDIR="$work/build" \
		PATH="$work/toolchain/bin:/usr/bin:/bin" \
		CARGO_HOME="$work/build/cargo-home" \
		NIX_BUILD_CORES="$cores" \
		CARGO_TERM_COLOR=never \
		bash -euo pipefail -c '
			echo "sandbox: uid $(id -u) gid $(id -g) groups [$(id -G)] pid1=$(cat /proc/1/comm)" \
				"HOME=$HOME ($(test -e "$HOME" && echo exists || echo absent))" \
				"/run/strata $(test -e /run/strata && echo exists || echo absent)" \
				"network: $(ip -o link show up 2>/dev/null | cut -d: -f2 | tr -d " \n") up"
			# As nixpkgs cargoBuildHook and cargoCheckHook run them.
			cargo build -j "$NIX_BUILD_CORES" --profile release --target "$1" --frozen --workspace
			# --no-fail-fast (which Nix does not pass) only so that one run
			# reports every failing test binary, not the first.
			cargo test -j "$NIX_BUILD_CORES" --profile release --target "$1" --frozen --workspace \
				--no-fail-fast -- --test-threads="$NIX_BUILD_CORES"
		' sandbox "$triple"
fi

if [ "$(id -u)" -ne 0 ]; then
	echo "nix-sandbox-test: run as root: it needs namespaces and mounts" >&2
	exit 2
fi
for cmd in unshare setpriv git cargo rustc; do
	command -v "$cmd" >/dev/null || {
		echo "nix-sandbox-test: $cmd not found" >&2
		exit 2
	}
done

work=$(mktemp -d /var/tmp/strata-nix-sandbox.XXXXXX)
cleanup() {
	if [ "$keep" -eq 1 ]; then
		echo "nix-sandbox-test: kept $work"
	else
		rm -rf -- "$work"
	fi
}
trap cleanup EXIT
chmod 0755 "$work"

# The package's source: the committed files under package.nix's sourcePaths
# (read from there, so the two cannot drift apart), without .nix files, as
# the flake's fileset has it. Untracked files are not in a flake's source.
mapfile -t src_paths < <(sed -n '/^  sourcePaths = \[/,/^  \];/p' "$repo/package.nix" |
	grep -o '\./[A-Za-z0-9_./-]*' | sed 's|^\./||')
[ ${#src_paths[@]} -gt 0 ] || {
	echo "nix-sandbox-test: no sourcePaths found in package.nix" >&2
	exit 1
}
mkdir -p "$work/build/source"
(
	cd "$repo"
	git ls-files --cached -z -- "${src_paths[@]}" ':!:*.nix' |
		xargs -0 cp --parents -t "$work/build/source"
)
echo "nix-sandbox-test: source = ${src_paths[*]}"

# Vendored crates and the source replacement cargoSetupHook configures.
mkdir -p "$work/build/cargo-home"
(cd "$work/build/source" && cargo vendor --locked --quiet "$work/build/vendor" >/dev/null)
cat >"$work/build/cargo-home/config.toml" <<EOF
[source.crates-io]
replace-with = "vendored-sources"

[source.vendored-sources]
directory = "$work/build/vendor"
EOF
chown -R "$build_uid:$build_gid" "$work/build"
chmod 0700 "$work/build"

sysroot=$(rustc --print sysroot)
STRATA_SANDBOX_WORK=$work STRATA_SANDBOX_SYSROOT=$sysroot \
	unshare --net --mount --pid --fork --mount-proc --propagation private \
	"$repo/scripts/nix-sandbox-test.sh" --inner
