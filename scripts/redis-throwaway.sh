#!/usr/bin/env bash
# Starts a throwaway redis-server on a free loopback port, with no
# persistence, in a fresh temporary directory.
#   eval "$(scripts/redis-throwaway.sh start)"   # sets MAE_REDIS_PID, MAE_REDIS_PORT,
#                                                # MAE_REDIS_DIR, MAILAGENT_REDIS_URL
#   scripts/redis-throwaway.sh stop "$MAE_REDIS_PID" "$MAE_REDIS_DIR"
# Exits 3 when redis-server is not installed.
set -euo pipefail

free_port() {
  python3 - 2>/dev/null <<'PY' || echo $((20000 + RANDOM % 20000))
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
}

case "${1:-}" in
start)
  command -v redis-server >/dev/null 2>&1 || exit 3
  dir=$(mktemp -d "${TMPDIR:-/tmp}/mae-redis.XXXXXX")
  for attempt in 1 2 3 4 5; do
    port=$(free_port)
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
      --dir "$dir" --logfile "$dir/redis.log" --daemonize no >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 1 100); do
      if redis-cli -p "$port" ping >/dev/null 2>&1; then
        echo "MAE_REDIS_PID=$pid MAE_REDIS_PORT=$port MAE_REDIS_DIR=$dir"
        echo "export MAILAGENT_REDIS_URL=redis://127.0.0.1:$port"
        exit 0
      fi
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.05
    done
    kill "$pid" 2>/dev/null || true
  done
  rm -rf "$dir"
  exit 1
  ;;
stop)
  pid=${2:?pid}
  dir=${3:-}
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  [ -n "$dir" ] && rm -rf "$dir"
  ;;
*)
  echo "usage: $0 start | stop PID [DIR]" >&2
  exit 2
  ;;
esac
