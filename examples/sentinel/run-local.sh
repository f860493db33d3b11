#!/usr/bin/env bash
# Runs this directory's deployment on one machine, on loopback: three
# redis-server (redis.conf), three Sentinels (sentinel.conf), two relays
# (relay.env) behind nginx (nginx.conf). Each file is made from the
# example's own, with the host names, ports, secrets and directories
# substituted, so what runs here is what the example says (the test
# tests/test_it_example_sentinel.c runs it).
#
#   run-local.sh start DIR   start everything in DIR (made if needed), wait
#                            until it is ready, write DIR/local.env
#   run-local.sh stop DIR    stop everything started in DIR
#
# The host names redis-N.internal become "localhost" (the Sentinels resolve
# a host name as they would on real machines); relay-N.internal becomes
# 127.0.0.1 and the relays' port; nginx listens on 127.0.0.1 without TLS.
# Ports are free loopback ports picked at start. Commands, from the
# environment: MAILAGENT (default: mailagent on PATH), REDIS_SERVER,
# REDIS_CLI, NGINX_BIN (default: redis-server, redis-cli, nginx on PATH or in
# /usr/sbin).
#
# DIR/local.env (shell syntax) then holds NGINX_PORT, RELAY1_PORT,
# RELAY2_PORT, REDIS1_PORT..REDIS3_PORT, SENTINEL1_PORT..SENTINEL3_PORT,
# PASSWORD, TOKEN (the relays' WEBHOOK_SECRET), MASTER_NAME, STREAM,
# RELAY_URL (the relays' MAILAGENT_REDIS_URL) and PUBLISHER_URL (the same
# with ?wait_replicas=1, step 3 of README.md). Logs: DIR/*/*.log.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
usage() {
  echo "usage: $0 start|stop DIR" >&2
  exit 2
}
[ $# -eq 2 ] || usage
cmd=$1
dir=$2

MAILAGENT=${MAILAGENT:-mailagent}
REDIS_SERVER=${REDIS_SERVER:-redis-server}
REDIS_CLI=${REDIS_CLI:-redis-cli}
# nginx reads NGINX itself (sockets inherited in a binary upgrade): never
# pass one down.
unset NGINX
if [ -z "${NGINX_BIN:-}" ]; then
  NGINX_BIN=$(command -v nginx || echo /usr/sbin/nginx)
fi

say() { echo "run-local: $*" >&2; }

# True while pid runs and is the program named (a pid file left by a
# crash may name a pid reused since). A zombie does not run.
running() {
  local pid=$1 name=$2 stat
  if [ -r "/proc/$pid/stat" ]; then
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [ "${stat:0:1}" != Z ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$name"
  else
    kill -0 "$pid" 2>/dev/null
  fi
}

# stop: every pid file under DIR, relays first (their clients get retry:),
# then nginx, the Sentinels, the servers; SIGKILL after 10 s.
stop_all() {
  local f pid name i
  for f in "$dir"/relay-*/relay.pid "$dir"/nginx/nginx.pid "$dir"/sentinel-*/sentinel.pid \
    "$dir"/redis-*/redis.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    case $f in
    */relay.pid) name=mailagent ;;
    */nginx.pid) name=nginx ;;
    *) name=redis ;;
    esac
    if [ -n "$pid" ] && running "$pid" "$name"; then
      kill -TERM "$pid" 2>/dev/null || true
      for i in $(seq 100); do
        running "$pid" "$name" || break
        sleep 0.1
      done
      running "$pid" "$name" && kill -KILL "$pid" 2>/dev/null
    fi
    rm -f "$f"
  done
  return 0
}

case $cmd in
stop)
  [ -d "$dir" ] || exit 0
  stop_all
  exit 0
  ;;
start) ;;
*) usage ;;
esac

for tool in "$MAILAGENT" "$REDIS_SERVER" "$REDIS_CLI" "$NGINX_BIN"; do
  command -v "$tool" >/dev/null || { say "$tool not found"; exit 1; }
done
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
# Whatever an earlier start left running in DIR goes first.
stop_all
rm -rf "$dir"/redis-? "$dir"/sentinel-? "$dir"/relay-? "$dir"/nginx "$dir"/local.env

# ---- free loopback ports ----
# Below the kernel's ephemeral range (ip_local_port_range starts at 32768 by
# default), where outgoing connections and port-0 listeners take theirs;
# a port counts as free when no socket uses it (ss) or, without ss, when
# nothing answers there.
declare -A taken=()
free_port() {
  local p
  while :; do
    p=$((10000 + RANDOM % 22000))
    [ -z "${taken[$p]:-}" ] || continue
    if command -v ss >/dev/null; then
      [ -z "$(ss -Htan "( sport = :$p )")" ] || continue
    elif (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      continue
    fi
    taken[$p]=1
    echo "$p"
    return
  done
}
for i in 1 2 3; do
  declare "REDIS${i}_PORT=$(free_port)"
  declare "SENTINEL${i}_PORT=$(free_port)"
done
RELAY1_PORT=$(free_port)
RELAY2_PORT=$(free_port)
NGINX_PORT=$(free_port)
PASSWORD=local-$RANDOM$RANDOM
TOKEN=local-token-$RANDOM$RANDOM
MASTER_NAME=mymaster

trap 'say "start failed; stopping what started (logs in $dir)"; stop_all' ERR

# Waits up to $1 seconds for the command that follows to succeed.
wait_for() {
  local secs=$1 i
  shift
  for i in $(seq $((secs * 10))); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  say "not ready after ${secs}s: $*"
  return 1
}
cli() {
  local port=$1
  shift
  "$REDIS_CLI" -h 127.0.0.1 -p "$port" --no-auth-warning "$@"
}

# ---- redis.conf: port, loopback, the password, replicaof on redis-2 and 3 ----
master=$REDIS1_PORT
for i in 1 2 3; do
  port_var=REDIS${i}_PORT
  d=$dir/redis-$i
  mkdir -p "$d"
  sed -e "s/^port 6379\$/port ${!port_var}/" \
    -e 's/^bind 0\.0\.0\.0$/bind 127.0.0.1/' \
    -e "s/CHANGE-ME/$PASSWORD/g" \
    "$here/redis.conf" >"$d/redis.conf"
  if [ "$i" -ne 1 ]; then
    sed -i -e "s/^# replicaof redis-1\.internal 6379\$/replicaof localhost $master/" "$d/redis.conf"
    grep -q "^replicaof localhost $master\$" "$d/redis.conf"
  fi
  grep -q "^port ${!port_var}\$" "$d/redis.conf"
  grep -q '^bind 127.0.0.1$' "$d/redis.conf"
  printf 'dir %s\nlogfile %s/redis.log\npidfile %s/redis.pid\ndaemonize yes\n' \
    "$d" "$d" "$d" >>"$d/redis.conf"
  "$REDIS_SERVER" "$d/redis.conf"
done
# Step 1: the master sees both replicas online.
master_ready() {
  local info
  info=$(cli "$REDIS1_PORT" -a "$PASSWORD" INFO replication)
  [ "$(grep -c 'state=online' <<<"$info")" -eq 2 ]
}
wait_for 30 master_ready

# ---- sentinel.conf: port, the master's address, the password ----
for i in 1 2 3; do
  port_var=SENTINEL${i}_PORT
  d=$dir/sentinel-$i
  mkdir -p "$d"
  sed -e "s/^port 26379\$/port ${!port_var}/" \
    -e "s/ redis-1\.internal 6379 / localhost $master /" \
    -e "s/CHANGE-ME/$PASSWORD/g" \
    "$here/sentinel.conf" >"$d/sentinel.conf"
  grep -q "^sentinel monitor $MASTER_NAME localhost $master 2\$" "$d/sentinel.conf"
  printf 'bind 127.0.0.1\ndir %s\nlogfile %s/sentinel.log\npidfile %s/sentinel.pid\ndaemonize yes\n' \
    "$d" "$d" "$d" >>"$d/sentinel.conf"
  "$REDIS_SERVER" "$d/sentinel.conf" --sentinel
done
# Step 2: every Sentinel names the master and sees the others and both replicas.
sentinels_ready() {
  local i port_var m
  for i in 1 2 3; do
    port_var=SENTINEL${i}_PORT
    m=$(cli "${!port_var}" SENTINEL master "$MASTER_NAME" | tr '\n' ' ')
    grep -q "num-slaves 2 " <<<"$m" || return 1
    grep -q "num-other-sentinels 2 " <<<"$m" || return 1
    cli "${!port_var}" SENTINEL get-master-addr-by-name "$MASTER_NAME" | grep -qx "$master" ||
      return 1
  done
}
wait_for 30 sentinels_ready

# ---- relay.env: the Sentinels' addresses, the secrets ----
for i in 1 2; do
  port_var=RELAY${i}_PORT
  d=$dir/relay-$i
  mkdir -p "$d"
  sed -e "s/CHANGE-ME-TOO/$TOKEN/g" -e "s/CHANGE-ME/$PASSWORD/g" \
    -e "s/redis-1\.internal/localhost:$SENTINEL1_PORT/" \
    -e "s/redis-2\.internal/localhost:$SENTINEL2_PORT/" \
    -e "s/redis-3\.internal/localhost:$SENTINEL3_PORT/" \
    "$here/relay.env" >"$d/relay.env"
  # As systemd's EnvironmentFile reads it: KEY=VALUE lines, # comments.
  (
    while IFS= read -r line; do
      case $line in '' | '#'*) continue ;; esac
      export "${line?}"
    done <"$d/relay.env"
    exec "$MAILAGENT" events serve --listen "127.0.0.1:${!port_var}" </dev/null >/dev/null \
      2>"$d/relay.log"
  ) &
  echo $! >"$d/relay.pid"
done
# Step 4: each relay reads the stream.
for i in 1 2; do
  wait_for 30 grep -q "redis: reading the stream" "$dir/relay-$i/relay.log"
done

# ---- nginx.conf: the relays' ports, a loopback listener without TLS ----
d=$dir/nginx
mkdir -p "$d"
{
  printf 'worker_processes 1;\nevents { worker_connections 1024; }\nhttp {\n'
  printf 'access_log off;\n'
  for t in client_body proxy fastcgi uwsgi scgi; do
    printf '%s_temp_path %s/%s;\n' "$t" "$d" "$t"
  done
  sed -e "s/relay-1\.internal:9200/127.0.0.1:$RELAY1_PORT/" \
    -e "s/relay-2\.internal:9200/127.0.0.1:$RELAY2_PORT/" \
    -e "s/^\( *\)listen 443 ssl;/\1listen 127.0.0.1:$NGINX_PORT;/" \
    "$here/nginx.conf"
  printf '}\n'
} >"$d/nginx.conf"
grep -q "listen 127.0.0.1:$NGINX_PORT;" "$d/nginx.conf"
grep -q "127.0.0.1:$RELAY2_PORT" "$d/nginx.conf"
"$NGINX_BIN" -p "$d" -c "$d/nginx.conf" -e "$d/error.log" -g "pid $d/nginx.pid;"
# Step 5: the stream answers through nginx.
nginx_ready() {
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$NGINX_PORT/healthz")
  [ "$code" = 200 ]
}
wait_for 10 nginx_ready

stream=$(grep '^MAILAGENT_STREAM=' "$dir/relay-1/relay.env" | cut -d= -f2-)
relay_url=$(grep '^MAILAGENT_REDIS_URL=' "$dir/relay-1/relay.env" | cut -d= -f2-)
{
  for v in NGINX_PORT RELAY1_PORT RELAY2_PORT REDIS1_PORT REDIS2_PORT REDIS3_PORT \
    SENTINEL1_PORT SENTINEL2_PORT SENTINEL3_PORT PASSWORD TOKEN MASTER_NAME; do
    printf '%s=%s\n' "$v" "${!v}"
  done
  printf "STREAM='%s'\n" "$stream"
  printf "RELAY_URL='%s'\n" "$relay_url"
  printf "PUBLISHER_URL='%s'\n" "${relay_url%%#*}?wait_replicas=1#${relay_url#*#}"
} >"$dir/local.env"
trap - ERR
say "ready: curl -N -H 'X-Webhook-Token: $TOKEN' http://127.0.0.1:$NGINX_PORT/api/events/stream"
say "settings in $dir/local.env; stop with: $0 stop $dir"
