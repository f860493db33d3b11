#!/usr/bin/env bash
# Runs the relay's benchmark on two builds of `mailagent` in one run,
# alternating (old, new, old, new ...) so both see the same machine:
#   bench/relay/compare.sh BENCH OLD_MAILAGENT NEW_MAILAGENT [ROUNDS] [-- bench args]
# BENCH is mae_relay_bench; the bench args default to --clients 1000,10000
# --replay 10000. Each round's JSON lands in $OUT (default /tmp/relay-compare).
set -euo pipefail
bench=$1 old=$2 new=$3
rounds=${4:-1}
shift 3
[ $# -gt 0 ] && shift
[ "${1:-}" = "--" ] && shift
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--clients 1000,10000 --replay 10000)
out=${OUT:-/tmp/relay-compare}
mkdir -p "$out"
redis=$(command -v redis-server || echo /usr/bin/redis-server)
for r in $(seq 1 "$rounds"); do
  for side in old new; do
    bin=$old
    [ $side = new ] && bin=$new
    echo "== round $r: $side ($bin)"
    "$bench" "$bin" "$redis" "${args[@]}" --json "$out/$side-$r.json"
  done
done
