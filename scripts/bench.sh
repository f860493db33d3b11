#!/usr/bin/env bash
# `make bench`: builds the benchmark harness in its own Release tree and runs
# it from the repository root. It starts and stops its own redis-server
# processes on 127.0.0.1 and writes bench/results/latest.json and
# bench/results/latency.png. The whole run (--full, the default) takes about
# 5 minutes on 2 CPUs; MAE_BENCH_ARGS=--quick shortens the Redis outage of
# part 5 to 15 s and the replaced design's capped runs.
#   make bench
#   MAE_BENCH_ARGS=--quick make bench
#   MAE_BENCH_ARGS="--only latency,stores" make bench   # two parts only (no latest.json)
#   MAE_BENCH_PYTHON=0 make bench             # without the Python part
set -euo pipefail
cd "$(dirname "$0")/.."

build=${MAE_BENCH_BUILD:-build-release}
log=$(mktemp)
trap 'rm -f "$log"' EXIT

echo "bench: building $build (Release)" >&2
if ! { cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DMAE_BUILD_TESTS=OFF \
        -DMAE_BUILD_TOOLS=ON &&
       cmake --build "$build" -j"${MAE_JOBS:-2}" --target mae_bench mailagent-events \
         mailagent mae_relay_bench mae_hub_bench; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "bench: build failed" >&2
  exit 1
fi

mkdir -p bench/results

# The Python part (bench/python/README.md): the package's drop-in
# safe_publish against the redis-py design it replaces, about 30 s. Runs
# first so the harness's summary stays the last line; skipped with --only
# or MAE_BENCH_PYTHON=0.
case " ${MAE_BENCH_ARGS:-} " in *" --only "*) MAE_BENCH_PYTHON=${MAE_BENCH_PYTHON:-0} ;; esac
if [ "${MAE_BENCH_PYTHON:-1}" = 1 ]; then
  py_quick=""
  case " ${MAE_BENCH_ARGS:-} " in *" --quick "*) py_quick=--quick ;; esac
  MAILAGENT_EVENTS_LIB=$PWD/$build/libmailagent-events.so.2 /usr/bin/python3 \
    bench/python/bench_safe_publish.py $py_quick --json bench/results/python.json
fi
# The relay's part (bench/relay/, bench/README.md "The SSE relay"): 100,
# 1 000 and 10 000 idle clients held by `mailagent events serve`, memory,
# fan-out delay and CPU, about a minute. Skipped with --only or
# MAE_BENCH_RELAY=0.
case " ${MAE_BENCH_ARGS:-} " in *" --only "*) MAE_BENCH_RELAY=${MAE_BENCH_RELAY:-0} ;; esac
if [ "${MAE_BENCH_RELAY:-1}" = 1 ]; then
  "$build/bench/relay/mae_relay_bench" "$build/mailagent" "$(command -v redis-server)" \
    --events 200 --json bench/results/relay.json
  # The hub's path (part hubpath, bench/README.md): publish -> client through
  # the hub, Redis pub/sub and a Redis Stream, and the hub's memory; ~20 s.
  "$build/bench/relay/mae_hub_bench" "$build/mailagent" "$(command -v redis-server)" \
    --events 100000 --json bench/results/hubpath.json
fi
# shellcheck disable=SC2086  # MAE_BENCH_ARGS is a list of flags
# Not exec: the trap above must still remove the build log.
# The defaults come first, so a --results or --plot in MAE_BENCH_ARGS wins.
"$build/bench/mae_bench" --results bench/results --plot bench/plot.gp \
  ${MAE_BENCH_ARGS:---full}
