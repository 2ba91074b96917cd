#!/usr/bin/env bash
# The zero-shot results table of the README: every strategy and baseline on each shared data set
# (validation and test, full ranking), timed. Give it the machine alone (2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
OUT=${OUT:-results}
for name in movielens-100k amazon-beauty; do
  /usr/bin/time -f "%e s wall, %M KB max RSS" -o "$OUT/$name.time" \
    promptrec evaluate --data "$DATA/$name" --output "$OUT/$name.json" \
      --markdown "$OUT/$name.md" --report "$OUT/$name-report" "$@"
done
