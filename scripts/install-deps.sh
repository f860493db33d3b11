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
# rediss:// (TLS to Redis) links OpenSSL 3; the TLS tests make their
# certificates with the openssl command.
have_cmd pkg-config && have_pc libssl  || need+=(libssl-dev)
have_cmd openssl      || need+=(openssl)
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
  # The man page test renders mailagent.1.
  have_cmd groff    || need+=(groff-base)
  # The comma-locale test (tests/test_text.c) needs a locale whose decimal
  # point is a comma; Debian's `locales` has its sources and locale-gen.
  { [ -f /usr/share/i18n/locales/de_DE ] && [ -x /usr/sbin/locale-gen ]; } || need+=(locales)
  # The relay's tests read it with real clients: httpx (the cookbook's
  # reader), headless Chromium (the dashboard), nginx in front of it.
  have_py httpx      || need+=(python3-httpx)
  [ -x /usr/bin/chromium ] || need+=(chromium)
  [ -x /usr/sbin/nginx ]   || need+=(nginx-light)
fi

# de_DE.UTF-8 is generated (below) when no comma locale is there yet.
have_comma_locale() { locale -a 2>/dev/null | grep -qiE '^de_DE\.utf-?8$'; }
want_locale=0
[ "${MAE_DEPS_FULL:-1}" = 1 ] && ! have_comma_locale && want_locale=1

[ ${#need[@]} -eq 0 ] && [ $want_locale = 0 ] && exit 0

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  have_cmd sudo || { echo "install-deps: need root (or sudo) to install: ${need[*]}" >&2; exit 1; }
  sudo="sudo"
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "install-deps: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [ $want_locale = 1 ]; then
  # Through /etc/locale.gen, so that a later locale-gen keeps it.
  echo "install-deps: generating the de_DE.UTF-8 locale" >&2
  if grep -qE '^# *de_DE\.UTF-8 UTF-8' /etc/locale.gen 2>/dev/null; then
    $sudo sed -i -E 's/^# *(de_DE\.UTF-8 UTF-8)/\1/' /etc/locale.gen
  elif ! grep -qE '^de_DE\.UTF-8 UTF-8' /etc/locale.gen 2>/dev/null; then
    echo 'de_DE.UTF-8 UTF-8' | $sudo tee -a /etc/locale.gen >/dev/null
  fi
  $sudo /usr/sbin/locale-gen >/dev/null
  have_comma_locale || { echo "install-deps: could not generate de_DE.UTF-8" >&2; exit 1; }
fi
