#!/usr/bin/env bash
# `make bench`: builds the benchmark harness in its own Release tree and runs
# it from the repository root. It starts and stops its own redis-server
# processes on 127.0.0.1 and writes bench/results/latest.json and
# bench/results/latency.png. The whole run (--full, the default) takes about
# 5 minutes on 2 CPUs; MAE_BENCH_ARGS=--quick shortens the Redis outage of
# part 5 to 15 s and the replaced design's capped runs.
#   make bench
#   MAE_BENCH_ARGS=--quick make bench
#   MAE_BENCH_ARGS="--only 13" make bench     # parts 1 and 3 only (no latest.json)
set -euo pipefail
cd "$(dirname "$0")/.."

build=${MAE_BENCH_BUILD:-build-release}
log=$(mktemp)
trap 'rm -f "$log"' EXIT

echo "bench: building $build (Release)" >&2
if ! { cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DMAE_BUILD_TESTS=OFF \
        -DMAE_BUILD_TOOLS=ON &&
       cmake --build "$build" -j"${MAE_JOBS:-2}" --target mae_bench; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "bench: build failed" >&2
  exit 1
fi

mkdir -p bench/results
# shellcheck disable=SC2086  # MAE_BENCH_ARGS is a list of flags
# Not exec: the trap above must still remove the build log.
"$build/bench/mae_bench" ${MAE_BENCH_ARGS:---full} \
  --results bench/results --plot bench/plot.gp
