#!/usr/bin/env bash
# Every .nix file of the repository must parse: `nix-instantiate --parse`
# on each (Debian's nix-bin is enough; nothing is evaluated or built). For
# CI, where no Nix binary cache is reachable and `nix flake check` cannot run.
#
#   scripts/check-nix.sh            check the files git tracks or would track
#   scripts/check-nix.sh FILE...    check these files
#
# Exit status: 0 when every file parses, 1 otherwise, 2 when nix-instantiate
# is missing.
set -euo pipefail

if ! command -v nix-instantiate >/dev/null; then
	echo "check-nix: nix-instantiate not found (Debian: apt-get install nix-bin)" >&2
	exit 2
fi

repo=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

if [ $# -gt 0 ]; then
	files=("$@")
else
	# Tracked and untracked-but-not-ignored files, so a new file is checked
	# before it is committed; target/ and other ignored trees are skipped.
	mapfile -t files < <(git ls-files --cached --others --exclude-standard -- '*.nix' | sort -u)
fi

if [ ${#files[@]} -eq 0 ]; then
	echo "check-nix: no .nix files found" >&2
	exit 1
fi

passed=0
failed=0
for f in "${files[@]}"; do
	[ -f "$f" ] || continue # deleted in the work tree
	if err=$(nix-instantiate --parse "$f" 2>&1 >/dev/null); then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
		echo "FAIL $f" >&2
		printf '%s\n' "$err" | sed 's/^/    /' >&2
	fi
done
echo "nix-parse: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
