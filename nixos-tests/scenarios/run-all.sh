#!/usr/bin/env bash
# Runs every scenario (NN-*.sh beside this file) in order; for a machine
# test that wants one command. Exit status: the number of failures (capped).
set -u
dir=$(cd "$(dirname "$0")" && pwd)
failed=0
passed=0
for s in "$dir"/[0-9]*.sh; do
    if bash "$s"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAILED: $(basename "$s")" >&2; fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
