#!/usr/bin/env bash
# Runs each cargo-fuzz target for a while (default 30 s each) and fails on
# the first crash, leak or timeout. Used by CI and for the long runs whose
# figures are in docs/reliability.md.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]      e.g. scripts/fuzz.sh 600 paths
#
# Only a stable toolchain exists on these machines: cargo-fuzz's nightly
# flags (-Zsanitizer=address, -Cpasses=sancov-module, ...) are accepted by
# stable rustc with RUSTC_BOOTSTRAP=1. Inputs found during a run go to a
# scratch corpus; the committed corpus (fuzz/corpus/<target>/seed-*) is only
# read. A crash leaves its input in fuzz/artifacts/<target>/, and
# `RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <that file>` replays it.
set -euo pipefail

secs="${1:-${FUZZ_SECONDS:-30}}"
shift || true
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here/fuzz"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

for t in "${targets[@]}"; do cargo fuzz build "$t"; done
scratch="$(mktemp -d /tmp/strata-fuzz-corpus.XXXXXX)"
cleanup() {
    rm -rf "$scratch"
    # The paths target's trees, named by the pid that built them; leave
    # those of fuzzers still running (another fuzz.sh, say).
    for d in "${TMPDIR:-/tmp}"/strata-fuzz-tree-*; do
        [ -d "$d" ] || continue
        kill -0 "${d##*-}" 2>/dev/null || rm -rf "$d"
    done
}
trap cleanup EXIT

failed=0
for t in "${targets[@]}"; do
    mkdir -p "$scratch/$t"
    log="${FUZZ_LOG_DIR:-$scratch}/$t.log"
    mkdir -p "$(dirname "$log")"
    echo "fuzz.sh: $t for ${secs}s"
    if cargo fuzz run "$t" "$scratch/$t" "corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1; then
        runs="$(grep -Eo 'Done [0-9]+ runs in [0-9]+ second' "$log" | tail -1)"
        cov="$(grep -Eo 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -1)"
        echo "fuzz.sh: $t ok: ${runs:-?}s, ${cov:-?}, corpus $(ls "$scratch/$t" | wc -l) inputs"
    else
        echo "fuzz.sh: $t FAILED; the end of its log:" >&2
        tail -60 "$log" >&2
        failed=1
    fi
done
exit "$failed"
