#!/usr/bin/env bash
# Installs the built library into a private prefix and builds a program
# outside the tree against it twice: with find_package (shared and static)
# and with pkg-config. Checks that only mae_ symbols are exported and that
# the SONAME is the major version.
set -euo pipefail
build=$1
work=$2
here=$(cd "$(dirname "$0")" && pwd)
rm -rf "$work"
mkdir -p "$work"
prefix=$work/prefix
cmake --install "$build" --prefix "$prefix" >/dev/null
# With the command comes its manual page.
if [ -x "$prefix/bin/mailagent" ]; then
  [ -f "$prefix/share/man/man1/mailagent.1" ] || { echo "mailagent.1 not installed"; exit 1; }
fi
# The .pc file carries the configured prefix: point the check at ours.
cmake -S "$build/.." -B "$work/cfg" -DCMAKE_INSTALL_PREFIX="$prefix" -DMAE_BUILD_TESTS=OFF -DMAE_BUILD_TOOLS=OFF >/dev/null
cmake --build "$work/cfg" -j2 >/dev/null
cmake --install "$work/cfg" >/dev/null

libdir=$(dirname "$(find "$prefix" -name 'libmailagent-events.so' | head -1)")
soname=$(objdump -p "$libdir/libmailagent-events.so" | awk '/SONAME/ {print $2}')
major=$(awk '/define MAE_VERSION_MAJOR/ {print $3}' "$prefix/include/mailagent/version.h")
[ "$soname" = "libmailagent-events.so.$major" ] || { echo "SONAME is $soname"; exit 1; }
bad=$(nm -D --defined-only "$libdir/libmailagent-events.so" | awk '$2 ~ /[TDBR]/ {print $3}' | grep -v '^mae_' || true)
[ -z "$bad" ] || { echo "exported symbols outside mae_:"; echo "$bad"; exit 1; }
internal=$(nm -D --defined-only "$libdir/libmailagent-events.so" | awk '{print $3}' | grep '^mae__' || true)
[ -z "$internal" ] || { echo "internal symbols exported:"; echo "$internal"; exit 1; }

# json-c serves the command and the tests only: the library's link line,
# CMake config and .pc must not ask a consumer for it.
if objdump -p "$libdir/libmailagent-events.so" | grep -q 'NEEDED.*json-c' ||
   grep -rq 'json-c\|jsonc' "$libdir/pkgconfig/mailagent-events.pc" "$libdir/cmake/mailagent-events"; then
  echo "json-c is part of the installed library's interface"; exit 1
fi

# 1. CMake package
cmake -S "$here" -B "$work/cmake-consumer" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$work/cmake-consumer" >/dev/null
LD_LIBRARY_PATH=$libdir "$work/cmake-consumer/consumer_cmake"
"$work/cmake-consumer/consumer_cmake_static"

# 2. pkg-config
export PKG_CONFIG_PATH=$libdir/pkgconfig
grep -q "^libdir=$libdir\$" "$libdir/pkgconfig/mailagent-events.pc"
cc -std=c11 -Wall -Wextra -Wpedantic -Werror "$here/consumer.c" -o "$work/consumer_pc" \
  $(pkg-config --cflags --libs mailagent-events)
LD_LIBRARY_PATH=$libdir "$work/consumer_pc"
cc -std=c11 "$here/consumer.c" -o "$work/consumer_pc_static" \
  $(pkg-config --cflags mailagent-events) "$libdir/libmailagent-events.a" \
  $(pkg-config --libs --static hiredis sqlite3 libssl libcrypto) -lpthread
"$work/consumer_pc_static"
echo "package consumer: cmake (shared, static) and pkg-config (shared, static) ok"
