#!/usr/bin/env bash
# `make test`: builds and runs the whole suite four ways, each in its own
# build tree: plain (gcc, warnings as errors), ASan+UBSan, TSan (clang), and
# valgrind memcheck over the unit tests; then replays each fuzz target over
# its seed corpus. Ends with one line "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh || exit 1

passed=0
failed=0
failures=()
jobs=${MAE_JOBS:-2}

# run_stage NAME CMD...: runs one stage, counts its tests from ctest's summary.
count_ctest() {
  local log=$1 line total nfail
  # Stages that are not ctest end with "NAME: N passed, M failed".
  line=$(grep -E '^(memcheck|fuzz|python): [0-9]+ passed, [0-9]+ failed' "$log" | tail -1)
  if [ -n "$line" ]; then
    passed=$((passed + $(sed -E 's/^[a-z]+: ([0-9]+) passed.*/\1/' <<<"$line")))
    failed=$((failed + $(sed -E 's/.*passed, ([0-9]+) failed/\1/' <<<"$line")))
    return
  fi
  line=$(grep -E '^[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -1)
  if [ -z "$line" ]; then
    failed=$((failed + 1))
    return
  fi
  total=$(sed -E 's/.* out of ([0-9]+).*/\1/' <<<"$line")
  nfail=$(sed -E 's/.*passed, ([0-9]+) tests? failed.*/\1/' <<<"$line")
  passed=$((passed + total - nfail))
  failed=$((failed + nfail))
}

stage() {
  local name=$1
  shift
  echo
  echo "==== $name"
  local log
  log=$(mktemp)
  if ! "$@" 2>&1 | tee "$log"; then
    failures+=("$name")
  fi
  count_ctest "$log"
  rm -f "$log"
}

configure_build() {
  local dir=$1
  shift
  cmake -S . -B "$dir" -DMAE_WERROR=ON "$@" >/dev/null && cmake --build "$dir" -j"$jobs" 2>&1 | grep -E 'warning|error|Error' ; test "${PIPESTATUS[0]}" -eq 0
}

plain() {
  configure_build build -DCMAKE_BUILD_TYPE=RelWithDebInfo || return 1
  (cd build && ctest --output-on-failure -j"$jobs")
}

asan() {
  configure_build build-asan -DCMAKE_BUILD_TYPE=Debug -DMAE_SANITIZE=address,undefined || return 1
  (cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
     UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
     ctest --output-on-failure -j"$jobs" -LE 'package')
}

tsan() {
  CC=clang configure_build build-tsan -DCMAKE_BUILD_TYPE=Debug -DMAE_SANITIZE=thread || return 1
  (cd build-tsan && TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
     ctest --output-on-failure -j"$jobs" -LE 'package|oom')
}

memcheck() {
  [ -d build ] || return 1
  local tests t status=0 ok=0 bad=0
  tests=$(cd build && ctest -N -L unit -LE oom | awk '/Test +#[0-9]+:/ {print $3}')
  for t in $tests; do
    if (cd build/tests && valgrind -q --error-exitcode=99 --leak-check=full \
          --errors-for-leak-kinds=definite,indirect --child-silent-after-fork=yes \
          "./$t" >"valgrind-$t.log" 2>&1); then
      echo "memcheck ok: $t"
      ok=$((ok + 1))
    else
      echo "memcheck FAILED: $t (build/tests/valgrind-$t.log):"
      tail -30 "build/tests/valgrind-$t.log"
      bad=$((bad + 1))
      status=1
    fi
  done
  echo "memcheck: $ok passed, $bad failed"
  return $status
}

# The Python package (bindings/python) over the plain build's library, with
# Debian's interpreter and pytest. Turns pytest's closing line ("3 failed,
# 40 passed, 1 error in 9.1s") into "python: N passed, M failed"; any
# non-zero exit fails the stage, 5 (no tests collected) included.
python_pkg() {
  # The soname's number is the major version (CMakeLists.txt, docs/api.md "ABI").
  local so
  so=build/libmailagent-events.so.$(awk '/define MAE_VERSION_MAJOR/ {print $3}' include/mailagent/version.h)
  [ -f "$so" ] ||
    configure_build build -DCMAKE_BUILD_TYPE=RelWithDebInfo || return 1
  local log rc last ok bad
  log=$(mktemp)
  MAILAGENT_EVENTS_LIB=$PWD/$so PYTHONDONTWRITEBYTECODE=1 \
    /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/python 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  last=$(grep -E ' in [0-9.]+s( \([0-9:]+\))?( =+)?$' "$log" | tail -1)
  rm -f "$log"
  ok=$(grep -oE '[0-9]+ passed' <<<"$last" | grep -oE '[0-9]+' || echo 0)
  bad=$(( $(grep -oE '[0-9]+ failed' <<<"$last" | grep -oE '[0-9]+' || echo 0) +
          $(grep -oE '[0-9]+ errors?' <<<"$last" | grep -oE '[0-9]+' || echo 0) ))
  [ "$rc" -ne 0 ] && [ "$bad" -eq 0 ] && bad=1
  echo "python: $ok passed, $bad failed"
  [ "$rc" -eq 0 ]
}

fuzz_replay() {
  [ -f scripts/fuzz.sh ] || { echo "no fuzz targets yet"; return 0; }
  bash scripts/fuzz.sh --corpus-only
}

stage "build + tests (gcc)" plain
stage "Python package (pytest)" python_pkg
stage "ASan + UBSan" asan
stage "TSan (clang)" tsan
stage "valgrind memcheck (unit tests)" memcheck
stage "fuzz targets over their corpora" fuzz_replay

echo
if [ ${#failures[@]} -gt 0 ]; then
  echo "failed stages: ${failures[*]}"
  [ "$failed" -eq 0 ] && failed=${#failures[@]}
fi
echo "$passed passed, $failed failed"
[ ${#failures[@]} -eq 0 ] && [ "$failed" -eq 0 ]
