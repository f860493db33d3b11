#!/usr/bin/env bash
# Builds every libFuzzer target (fuzz/fuzz_*.c) with clang in build-fuzz and
# runs each for MAE_FUZZ_SECONDS seconds (default 60) on a scratch copy of its
# seed corpus fuzz/corpus/<target>/, so the seeds in the tree stay as they are.
# With --corpus-only, replays each seed corpus once instead (what CI runs).
# Crashing inputs are written to build-fuzz/artifacts/. Exits non-zero when
# any target fails.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=fuzz
case "${1:-}" in
  --corpus-only) mode=replay ;;
  "") ;;
  *) echo "usage: $0 [--corpus-only]" >&2; exit 2 ;;
esac
seconds=${MAE_FUZZ_SECONDS:-60}
build=build-fuzz
jobs=${MAE_JOBS:-2}

if ! command -v clang >/dev/null; then
  echo "fuzz.sh: clang is required for libFuzzer" >&2
  exit 1
fi

targets=()
for src in fuzz/fuzz_*.c; do
  [ -e "$src" ] || continue
  targets+=("$(basename "$src" .c)")
done
if [ ${#targets[@]} -eq 0 ]; then
  echo "fuzz.sh: no fuzz/fuzz_*.c targets"
  exit 0
fi

CC=clang cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMAE_BUILD_FUZZ=ON \
  -DMAE_BUILD_TESTS=OFF -DMAE_BUILD_TOOLS=OFF >/dev/null
cmake --build "$build" -j"$jobs" --target "${targets[@]}"

mkdir -p "$build/artifacts"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

failed=()
for t in "${targets[@]}"; do
  bin="$build/fuzz/$t"
  seeds="fuzz/corpus/$t"
  work="$build/corpus/$t"
  rm -rf "$work"
  mkdir -p "$work"
  if [ -d "$seeds" ]; then
    cp -R "$seeds/." "$work/"
  fi
  echo "==== $t ($mode)"
  if [ "$mode" = replay ]; then
    # -runs=0: execute every input of the corpus once, then stop.
    args=(-runs=0)
  else
    args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1)
  fi
  if ! "$bin" "${args[@]}" -artifact_prefix="$build/artifacts/$t-" "$work"; then
    failed+=("$t")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: failed: ${failed[*]} (inputs in $build/artifacts/)"
  echo "fuzz: $((${#targets[@]} - ${#failed[@]})) passed, ${#failed[@]} failed"
  exit 1
fi
echo "fuzz.sh: ${#targets[@]} target(s) passed: ${targets[*]}"
echo "fuzz: ${#targets[@]} passed, 0 failed"
