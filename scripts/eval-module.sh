#!/usr/bin/env bash
# Evaluates the NixOS module modules/strata.nix under nixpkgs' own module
# system (lib.evalModules) and checks what it generates: with
# `services.strata.enable = true`, with a non-trivial configuration, disabled,
# with configurations its assertions must refuse, and with definitions the
# module system must reject (including NixOS options that do not exist);
# likewise services.strata.grants and services.strata.fleet (whose network
# settings are also compared with the Debian drop-in systemd/strata-fleet.conf).
#
#   scripts/eval-module.sh PATH-TO-NIXPKGS [SYSTEM]
#
# PATH-TO-NIXPKGS is either a checkout of nix-community/nixpkgs.lib (lib/
# alone: the NixOS options the module sets come from
# modules/tests/nixos-stubs.nix) or a full nixpkgs checkout (the real NixOS
# modules are used, and the stubs are checked against them). Needs only
# nix-instantiate; nothing is built or downloaded.
#
# Exit status: 0 when every check passed, 1 when one failed, 2 on bad usage.
set -euo pipefail

usage() {
	echo "usage: $0 PATH-TO-NIXPKGS-OR-NIXPKGS.LIB [SYSTEM]" >&2
	exit 2
}

[ $# -ge 1 ] && [ $# -le 2 ] || usage
nixpkgs=$(realpath -- "$1") || usage
system=${2:-x86_64-linux}
if [ ! -f "$nixpkgs/lib/default.nix" ]; then
	echo "$0: $nixpkgs has no lib/default.nix: not a nixpkgs or nixpkgs.lib checkout" >&2
	exit 2
fi

repo=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)

result=$(nix-instantiate --eval --strict --json --show-trace \
	--argstr nixpkgs "$nixpkgs" \
	--argstr system "$system" \
	"$repo/modules/tests/eval.nix")

if command -v jq >/dev/null; then
	jq -r '
		"mode: \(.mode) (nixpkgs lib \(.nixpkgs))",
		(.passed[] | "ok   \(.)"),
		(.failed[] | "FAIL \(.name)\n     \(.detail | tojson)"),
		(.skipped[] | "SKIP \(.name): \(.reason)"),
		"\(.passed | length) passed, \(.failed | length) failed, \(.skipped | length) skipped"
	' <<<"$result"
	failed=$(jq '.failed | length' <<<"$result")
else
	echo "$result"
	case $result in
	*'"failed":[]'*) failed=0 ;;
	*) failed=1 ;;
	esac
fi

# The VM tests' Python scripts (as the module and the stubs render them)
# must at least parse: a syntax error would otherwise surface only on a
# machine that can boot the VMs.
if command -v jq >/dev/null && command -v python3 >/dev/null; then
	for test in $(jq -r '.testScripts | keys[]' <<<"$result"); do
		if err=$(jq -r --arg t "$test" '.testScripts[$t]' <<<"$result" |
			python3 -c 'import ast, sys; ast.parse(sys.stdin.read(), "testScript")' 2>&1); then
			echo "ok   vm test $test: its script parses (python3)"
		else
			echo "FAIL vm test $test: its script does not parse"
			printf '%s\n' "$err" | sed 's/^/     /'
			failed=$((failed + 1))
		fi
	done
fi

[ "$failed" -eq 0 ]
