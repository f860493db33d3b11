#!/usr/bin/env bash
# Installs, from Debian's packages, whatever the build, tests, demo and
# benchmark need and this machine lacks. Runs `apt-get update` once, and
# only when something is missing. Idempotent and quiet when all is there.
set -euo pipefail

need=()
have_pc() { pkg-config --exists "$1" 2>/dev/null; }
have_cmd() { command -v "$1" >/dev/null 2>&1; }

have_cmd cc        || need+=(gcc)
have_cmd make      || need+=(make)
have_cmd cmake     || need+=(cmake)
have_cmd pkg-config || need+=(pkg-config)
have_cmd pkg-config && have_pc hiredis || need+=(libhiredis-dev)
have_cmd pkg-config && have_pc json-c  || need+=(libjson-c-dev)
have_cmd pkg-config && have_pc sqlite3 || need+=(libsqlite3-dev)
have_cmd pkg-config && have_pc cmocka  || need+=(libcmocka-dev)
have_cmd pkg-config && have_pc libevent || need+=(libevent-dev)
have_cmd redis-server || need+=(redis-server)
have_cmd redis-cli    || need+=(redis-tools)
# The demo shows the relay's frames as `curl -N` receives them.
have_cmd curl         || need+=(curl)
if [ "${MAE_DEPS_FULL:-1}" = 1 ]; then
  # Sanitizer runtimes, fuzzing, memcheck and the benchmark's plot.
  have_cmd clang    || need+=(clang)
  [ -n "$(ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a 2>/dev/null)" ] \
                    || need+=(libclang-rt-14-dev)
  have_cmd valgrind || need+=(valgrind)
  have_cmd gnuplot  || need+=(gnuplot-nox)
  # The Python package's tests and benchmark part run Debian's interpreter.
  have_py() { [ -x /usr/bin/python3 ] && /usr/bin/python3 -c "import $1" 2>/dev/null; }
  have_py pytest     || need+=(python3-pytest)
  have_py redis      || need+=(python3-redis)
  have_py setuptools || need+=(python3-setuptools)
  have_py pip        || need+=(python3-pip)
  # The relay's tests read it with real clients: httpx (the cookbook's
  # reader), headless Chromium (the dashboard), nginx in front of it.
  have_py httpx      || need+=(python3-httpx)
  [ -x /usr/bin/chromium ] || need+=(chromium)
  [ -x /usr/sbin/nginx ]   || need+=(nginx-light)
fi

[ ${#need[@]} -eq 0 ] && exit 0

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  have_cmd sudo || { echo "install-deps: need root (or sudo) to install: ${need[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "install-deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
