#!/usr/bin/env bash
# `make demo`: builds the project in build/, then runs two simulated days
# of mail through the demo watcher:
#
# 1. The one-machine install, no Redis: `mailagent events serve` with no
#    Redis URL is the hub; the watcher posts its events to it (relay_url),
#    `mailagent events tail --relay` and `curl -N` read them; a HUB
#    AGREEMENT check holds the tail's lines and curl's frames (ids
#    included) to each other, to the watcher's own counts and to the
#    database's rows: every event exactly once.
# 2. Redis: starts a throwaway redis-server, runs the watcher in stream
#    mode with `mailagent events tail` following the stream beside it and
#    the SSE relay read by `curl -N`, then prints the reconciliation reads
#    and an AGREEMENT check of the stream against the database.
#
# Exits non-zero on a mismatch in either part.
#
# The resume: the tail is stopped (SIGTERM) for part of the day and started
# again with `--since <the last id it printed>`; the check proves that its
# two runs together hold every event of the stream exactly once.
#
#   MAE_DEMO_MAILS=N   mails in the simulated day (default 500)
#   MAE_DEMO_SEED=N    reproducible run (default: a new seed each time)
#   MAE_DEMO_FAST=1    do not pace the watcher
#   MAE_DEMO_PUBSUB=1  pub/sub only, as before stream mode: no ids, no resume
#   MAE_DEMO_HUB_MAILS=N  mails in the hub's day (default 200; 0 skips part 1)
#   MAILAGENT_STREAM   the stream's key (default mailagent:events:stream)
#   BUILD=dir          build tree (default build)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

build=${BUILD:-build}
mails=${MAE_DEMO_MAILS:-500}
channel=${MAILAGENT_CHANNEL:-mailagent:events:v1}
export MAILAGENT_CHANNEL=$channel
# The watcher, the tail and the relay all take the stream from here; an
# empty MAILAGENT_STREAM is pub/sub only for each of them.
stream_key=""
[ "${MAE_DEMO_PUBSUB:-0}" = 1 ] || stream_key=${MAILAGENT_STREAM:-mailagent:events:stream}
export MAILAGENT_STREAM=$stream_key

say() { printf '\n== %s\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

# ---- cleanup: runs on every exit, Ctrl-C included --------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/mae-demo.XXXXXX") || die "cannot create a temporary directory"
tail_pid=""
show_pid=""
watcher_pid=""
relay_pid=""
curl_pid=""
hub_pid=""
hub_curl_pid=""
hub_tail_pid=""
MAE_REDIS_PID=""
MAE_REDIS_DIR=""
cleanup() {
  # Only the processes this script started, by their ids.
  [ -n "$watcher_pid" ] && kill "$watcher_pid" 2>/dev/null && wait "$watcher_pid" 2>/dev/null
  [ -n "$show_pid" ] && kill "$show_pid" 2>/dev/null
  [ -n "$tail_pid" ] && kill "$tail_pid" 2>/dev/null && wait "$tail_pid" 2>/dev/null
  [ -n "$curl_pid" ] && kill "$curl_pid" 2>/dev/null && wait "$curl_pid" 2>/dev/null
  [ -n "$relay_pid" ] && kill "$relay_pid" 2>/dev/null && wait "$relay_pid" 2>/dev/null
  [ -n "$hub_tail_pid" ] && kill "$hub_tail_pid" 2>/dev/null && wait "$hub_tail_pid" 2>/dev/null
  [ -n "$hub_curl_pid" ] && kill "$hub_curl_pid" 2>/dev/null && wait "$hub_curl_pid" 2>/dev/null
  [ -n "$hub_pid" ] && kill "$hub_pid" 2>/dev/null && wait "$hub_pid" 2>/dev/null
  if [ -n "$MAE_REDIS_PID" ]; then
    scripts/redis-throwaway.sh stop "$MAE_REDIS_PID" "$MAE_REDIS_DIR" >/dev/null 2>&1
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'echo; echo "demo: interrupted" >&2; exit 130' INT TERM

# ---- build --------------------------------------------------------------------
say "build ($build, RelWithDebInfo)"
if ! cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$work/cmake.log" 2>&1; then
  tail -n 30 "$work/cmake.log" >&2
  die "cmake configure failed (log above)"
fi
# Only what the demo runs: the tests have their own command (make test).
if ! cmake --build "$build" -j2 --target demo_watcher mailagent >"$work/build.log" 2>&1; then
  grep -E 'error|undefined reference' "$work/build.log" | head -n 20 >&2
  die "build failed (first errors above)"
fi
grep -E 'warning:' "$work/build.log" | head -n 10
watcher=$build/demo_watcher
cli=$build/mailagent
echo "built $watcher and $cli"

# ---- part 1: one machine, no Redis: the relay as the hub --------------------------
hub_failed=0
hub_mails=${MAE_DEMO_HUB_MAILS:-200}
if [ "$hub_mails" != 0 ]; then
  # No Redis URL anywhere: the relay is the hub, the watcher posts to it.
  hubenv=(env -u MAILAGENT_REDIS_URL -u REDIS_URL -u REDIS_DB -u MAILAGENT_STREAM
          -u MAILAGENT_RELAY_URL)
  "${hubenv[@]}" "$cli" events serve --listen 127.0.0.1:0 --ping-interval 5 2>"$work/hub.log" &
  hub_pid=$!
  hub_port=""
  for _ in $(seq 1 100); do
    hub_port=$(sed -n 's|^listening on http://127\.0\.0\.1:\([0-9]*\)/.*|\1|p' "$work/hub.log" | head -n 1)
    [ -n "$hub_port" ] && break
    kill -0 "$hub_pid" 2>/dev/null || break
    sleep 0.05
  done
  if [ -z "$hub_port" ] && ! kill -0 "$hub_pid" 2>/dev/null &&
     grep -qi 'no redis url' "$work/hub.log" && ! grep -q 'hub mode' "$work/hub.log"; then
    # A relay built before hub mode: it refuses to start without Redis.
    wait "$hub_pid" 2>/dev/null
    hub_pid=""
    say "part 1 skipped: this mailagent events serve has no hub mode (it said: $(head -n 1 "$work/hub.log"))"
    hub_mails=0
  elif [ -z "$hub_port" ] || ! grep -q 'hub mode' "$work/hub.log"; then
    cat "$work/hub.log" >&2
    die "mailagent events serve with no Redis URL did not start as the hub"
  fi
fi
if [ "$hub_mails" != 0 ]; then
  hub=http://127.0.0.1:$hub_port
  say "part 1: one machine, no Redis: the relay is the hub on $hub"
  sed -n 's/^/  hub| /p' "$work/hub.log" | head -n 3
  "$cli" events tail --relay "$hub" --json >"$work/hub-tail.jsonl" 2>"$work/hub-tail.err" &
  hub_tail_pid=$!
  curl -sN "$hub/api/events/stream" >"$work/hub.sse" 2>/dev/null &
  hub_curl_pid=$!
  # Both readers connected, or the first events would pass before they
  # listen (a reader that gives no id starts live).
  ready=0
  for _ in $(seq 1 100); do
    h=$(curl -s "$hub/api/events/health" 2>/dev/null)
    case "$h" in *'"subscriber_count":2'*) ready=1; break ;; esac
    sleep 0.05
  done
  [ "$ready" = 1 ] || die "the hub's readers did not connect (health: ${h:-none})"
  echo "  mailagent events tail --relay $hub --json   and   curl -N $hub/api/events/stream   are reading it"
  say "demo watcher --relay $hub: a simulated day of $hub_mails mails, no redis-server"
  hargs=(--mails "$hub_mails" --db "$work/hub.db" --relay "$hub")
  [ -n "${MAE_DEMO_SEED:-}" ] && hargs+=(--seed "$MAE_DEMO_SEED")
  [ "${MAE_DEMO_FAST:-0}" = 1 ] && hargs+=(--fast)
  "${hubenv[@]}" "$watcher" "${hargs[@]}" >"$work/hub-watcher.out"
  hwrc=$?
  cat "$work/hub-watcher.out"
  [ "$hwrc" = 0 ] || die "the demo watcher (hub) failed (exit $hwrc)"
  hub_published=$(grep -o ' published=[0-9]*' "$work/hub-watcher.out" | head -n 1 | cut -d= -f2)
  for _ in $(seq 1 100); do
    [ "$(wc -l <"$work/hub-tail.jsonl")" -ge "${hub_published:-0}" ] &&
      [ "$(grep -c '^event: mailagent$' "$work/hub.sse")" -ge "${hub_published:-0}" ] && break
    sleep 0.05
  done
  say "the tail's first lines, and the hub's stream as curl -N sees it"
  head -n 3 "$work/hub-tail.jsonl" | cut -c 1-150 | sed 's/^/  tail| /'
  grep -m 1 -B 2 -A 1 '^event: mailagent$' "$work/hub.sse" | cut -c 1-150 | sed 's/^/  sse| /'
  kill -TERM "$hub_tail_pid" 2>/dev/null
  wait "$hub_tail_pid"
  htrc=$?
  hub_tail_pid=""
  kill "$hub_curl_pid" 2>/dev/null
  wait "$hub_curl_pid" 2>/dev/null
  hub_curl_pid=""
  kill -TERM "$hub_pid" 2>/dev/null
  wait "$hub_pid"
  hrc=$?
  hub_pid=""
  [ -s "$work/hub-tail.err" ] && { echo "the tail said on stderr:"; sed 's/^/  /' "$work/hub-tail.err"; }
  echo "the tail exited $htrc on SIGTERM, the hub $hrc"
  { [ "$htrc" = 0 ] && [ "$hrc" = 0 ]; } || die "the tail or the hub did not exit 0 on SIGTERM"
  MAILAGENT_DB=$work/hub.db "$cli" admin stats --json >"$work/hub-admin-stats.json" ||
    die "mailagent admin stats (hub) failed"
  MAILAGENT_DB=$work/hub.db "$cli" admin queue-depth --json >"$work/hub-admin-queue-depth.json" ||
    die "mailagent admin queue-depth (hub) failed"
  MAILAGENT_DB=$work/hub.db "$cli" llm stats --json >"$work/hub-llm-stats.json" ||
    die "mailagent llm stats (hub) failed"

  say "HUB AGREEMENT (tail: events tail --relay; sse: curl -N; watcher: its own counts; db: the reads)"
  MAE_DEMO_WORK=$work MAE_DEMO_PUBLISHED=${hub_published:-} /usr/bin/env python3 - <<'PY' || hub_failed=1
import json, os, re, sys

work = os.environ["MAE_DEMO_WORK"]
pub = int(os.environ["MAE_DEMO_PUBLISHED"] or -1)

def read(name):
    with open(os.path.join(work, name), encoding="utf-8", errors="surrogateescape") as f:
        return [l.rstrip("\n") for l in f if l.strip()]

def load(name):
    with open(os.path.join(work, name), encoding="utf-8") as f:
        return json.load(f)

def id_key(i):
    ms, seq = i.split("-")
    return (int(ms), int(seq))

LINE = re.compile(r'^\{"id":"([0-9]+-[0-9]+)","event":(.*)\}$', re.S)
tail, bad = [], 0
for l in read("hub-tail.jsonl"):
    m = LINE.match(l)
    if m:
        tail.append((m.group(1), m.group(2)))
    else:
        bad += 1
# curl's frames: "id:" then "event: mailagent" then "data:", blank line.
sse, fid, kind = [], None, None
for l in read("hub.sse"):
    if l.startswith("id: "):
        fid = l[4:]
    elif l.startswith("event: "):
        kind = l[7:]
    elif l.startswith("data: ") and kind == "mailagent":
        sse.append((fid, l[6:]))
        fid = kind = None
    elif l.startswith("data: "):
        fid = kind = None

# The watcher's own record: its counts of each event type.
wcount = {}
for l in read("hub-watcher.out"):
    parts = l.split()
    if len(parts) >= 2 and re.match(r"^[a-z]+\.[a-z_]+$", parts[0]) and parts[1].isdigit():
        wcount.setdefault(parts[0], int(parts[1]))
by_type = {}
for _, raw in tail:
    try:
        t = json.loads(raw)["event_type"]
    except (ValueError, KeyError, TypeError):
        bad += 1
        continue
    by_type[t] = by_type.get(t, 0) + 1

stats, depth, llm = load("hub-admin-stats.json"), load("hub-admin-queue-depth.json"), load("hub-llm-stats.json")
def num(obj, path, default=None):
    for p in path.split("."):
        if not isinstance(obj, dict) or p not in obj:
            return default
        obj = obj[p]
    return obj if isinstance(obj, int) and not isinstance(obj, bool) else default

failed = 0
def line(name, text, ok):
    global failed
    failed += not ok
    print("  %-19s %s  %s" % (name, text, "OK" if ok else "MISMATCH"))

for etype, db in (("email.synced", num(stats, "emails_synced")),
                  ("email.dead_letter", num(stats, "emails.by_status.dead_letter", 0)),
                  ("outbox.enqueued", num(stats, "outbox.total")),
                  ("outbox.dead_letter", num(depth, "by_status.dead_letter", 0)),
                  ("llm.success", num(llm, "successes")),
                  ("llm.gave_up", num(llm, "by_status.gave_up", 0))):
    w = wcount.get(etype)
    line(etype, "tail %6d  watcher %6s  db %6s" % (by_type.get(etype, 0), w, db),
         w is not None and db is not None and by_type.get(etype, 0) == w == db)
ids = [i for i, _ in tail]
line("events received", "tail %d, curl %d, published %d" % (len(tail), len(sse), pub),
     len(tail) == len(sse) == pub)
line("ids", "%d ids, %d distinct, %s" % (len(ids), len(set(ids)),
     "increasing" if all(id_key(a) < id_key(b) for a, b in zip(ids, ids[1:])) else "NOT increasing"),
     len(set(ids)) == len(ids) and all(id_key(a) < id_key(b) for a, b in zip(ids, ids[1:])))
line("tail = curl", "id for id, byte for byte", tail == sse)
raws = [r for _, r in tail]
line("exactly once", "%d distinct events in %d" % (len(set(raws)), len(raws)), len(set(raws)) == len(raws))
line("JSON", "%d lines are not a JSON event" % bad, bad == 0)
print()
print("HUB AGREEMENT: %s" % ("OK" if failed == 0 else "%d MISMATCH" % failed))
sys.exit(1 if failed else 0)
PY
fi

# ---- part 2: Redis ------------------------------------------------------------------
say "part 2: Redis"
# ---- redis ------------------------------------------------------------------------
have_redis=0
if out=$(scripts/redis-throwaway.sh start); then
  eval "$out"
  have_redis=1
  say "redis-server on 127.0.0.1:$MAE_REDIS_PORT (throwaway, no persistence), channel $channel${stream_key:+, stream $stream_key}"
else
  rc=$?
  unset MAILAGENT_REDIS_URL
  if [ "$rc" = 3 ]; then
    say "redis-server is not installed: running without events (publisher disabled)"
  else
    say "could not start redis-server: running without events (publisher disabled)"
  fi
fi

export MAILAGENT_DB=$work/mail.db
tail1=$work/tail1.jsonl   # the tail's first run
tail2=$work/tail2.jsonl   # the tail after the resume (stream mode only)
: >"$tail1"
: >"$tail2"

# Clear the watcher's progress line before each line printed beside it on a
# terminal.
clr=""
[ -t 1 ] && [ -t 2 ] && clr=$'\r\033[K'
note() { printf '%s  %s\n' "$clr" "$*"; }

# Shows the first max lines of a tail's log, prefixed, while that tail runs
# (tail --pid ends the follower when the tail is stopped).
show_log() { # file pid max prefix
  tail -n +1 -f --pid="$2" "$1" 2>/dev/null |
    awk -v max="$3" -v pre="$4" -v clr="$clr" \
      '{ printf "%s  %s| %s\n", clr, pre, substr($0, 1, 150); fflush();
         if (++n >= max) { printf "%s  %s| ...\n", clr, pre; fflush(); exit } }' &
  show_pid=$!
}

# Stops the tail with SIGTERM, as a user's Ctrl-C or a service manager
# would; its exit status must be 0.
stop_tail() {
  kill -TERM "$tail_pid" 2>/dev/null
  wait "$tail_pid"
  local rc=$?
  tail_pid=""
  [ -n "$show_pid" ] && kill "$show_pid" 2>/dev/null && wait "$show_pid" 2>/dev/null
  show_pid=""
  return "$rc"
}

xlen() { redis-cli -p "$MAE_REDIS_PORT" XLEN "$stream_key" 2>/dev/null; }
last_id_of() { tail -n 1 "$1" | sed -n 's/^{"id":"\([0-9]*-[0-9]*\)".*/\1/p'; }

# ---- the tail -----------------------------------------------------------------------
if [ "$have_redis" = 1 ] && [ -n "$stream_key" ]; then
  # The stream keeps history: the tail reads it from the start, so nothing
  # is lost even before it connects; no need to wait for it.
  "$cli" events tail --json --since start >"$tail1" 2>"$work/tail1.err" &
  tail_pid=$!
  say "mailagent events tail --json --since start   (MAILAGENT_STREAM=$stream_key)"
  echo "  reads the stream: one {\"id\":ID,\"event\":EVENT} a line (first 10 shown, all kept);"
  echo "  it is stopped for part of the day and comes back with --since <its last id>"
  show_log "$tail1" "$tail_pid" 10 tail
elif [ "$have_redis" = 1 ]; then
  "$cli" events tail --json >"$tail1" 2>"$work/tail1.err" &
  tail_pid=$!
  # Pub/sub keeps no history: wait until the tail is subscribed, or the
  # first events would be lost before anyone listens.
  subscribed=0
  for _ in $(seq 1 100); do
    n=$(redis-cli -p "$MAE_REDIS_PORT" PUBSUB NUMSUB "$channel" 2>/dev/null | sed -n 2p)
    if [ "${n:-0}" -ge 1 ] 2>/dev/null; then subscribed=1; break; fi
    kill -0 "$tail_pid" 2>/dev/null || break
    sleep 0.05
  done
  if [ "$subscribed" != 1 ]; then
    cat "$work/tail1.err" >&2
    die "mailagent events tail did not subscribe to $channel"
  fi
  say "mailagent events tail --json is listening on $channel (pub/sub only: first 15 events shown, all kept)"
  show_log "$tail1" "$tail_pid" 15 tail
fi

# ---- the relay ------------------------------------------------------------------------
# The SSE relay beside the tail, on a free loopback port, read by curl -N
# as the cookbook does; the first frames are shown after the run.
relay_port=""
if [ "$have_redis" = 1 ]; then
  "$cli" events serve --listen 127.0.0.1:0 --ping-interval 5 --quiet 2>"$work/relay.log" &
  relay_pid=$!
  for _ in $(seq 1 100); do
    relay_port=$(sed -n 's|^listening on http://127\.0\.0\.1:\([0-9]*\)/.*|\1|p' "$work/relay.log" | head -n 1)
    [ -n "$relay_port" ] && break
    kill -0 "$relay_pid" 2>/dev/null || break
    sleep 0.05
  done
  if [ -z "$relay_port" ]; then
    cat "$work/relay.log" >&2
    die "mailagent events serve did not start"
  fi
  curl -sN "http://127.0.0.1:$relay_port/api/events/stream" >"$work/relay.sse" 2>/dev/null &
  curl_pid=$!
  # Subscribed to Redis and holding curl's stream, or the first events
  # would pass before curl listens.
  ready=0
  for _ in $(seq 1 100); do
    h=$(curl -s "http://127.0.0.1:$relay_port/healthz" 2>/dev/null)
    case "$h" in *'"redis":true'*'"clients":1'*) ready=1; break ;; esac
    sleep 0.05
  done
  if [ "$ready" != 1 ]; then
    cat "$work/relay.log" >&2
    die "the relay did not get ready (healthz: ${h:-none})"
  fi
  say "mailagent events serve${stream_key:+ (reading the stream)}: the SSE relay on http://127.0.0.1:$relay_port/api/events/stream"
  echo "  curl -N http://127.0.0.1:$relay_port/api/events/stream   is reading it"
  echo "  dashboard: http://127.0.0.1:$relay_port/   (live while the watcher runs)"
fi

# ---- the watcher ------------------------------------------------------------------------
say "demo watcher: a simulated day of $mails mails"
wargs=(--mails "$mails" --db "$MAILAGENT_DB")
[ -n "${MAE_DEMO_SEED:-}" ] && wargs+=(--seed "$MAE_DEMO_SEED")
[ "${MAE_DEMO_FAST:-0}" = 1 ] && wargs+=(--fast)
"$watcher" "${wargs[@]}" >"$work/watcher.out" &
watcher_pid=$!

# Stream mode: while the watcher runs, the tail is stopped once it has
# printed about 2 events per mail (some 30 % of the day) and started again
# with --since <its last id> once the stream has grown by as much again
# (some 60 %), or when the day is over. Counted in events, not seconds, so
# that MAE_DEMO_FAST and a slow machine stop it mid-day too.
phase=run1 stop_at=$((2 * mails)) restart_at="" lines1="" last1="" rc1="" len_at_restart="" id_at_restart=""
resume_tail() {
  # The stream's length and last id at this moment, read atomically: the
  # events after the tail's last id up to here are the ones it missed.
  local at
  at=$(redis-cli -p "$MAE_REDIS_PORT" --raw EVAL "local e = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
    return {redis.call('XLEN', KEYS[1]), e[1] and e[1][1] or ''}" 1 "$stream_key" 2>/dev/null)
  len_at_restart=$(printf '%s\n' "$at" | sed -n 1p)
  id_at_restart=$(printf '%s\n' "$at" | sed -n 2p)
  "$cli" events tail --json --since "${last1:-start}" >"$tail2" 2>"$work/tail2.err" &
  tail_pid=$!
  note "tail restarted: mailagent events tail --json --since ${last1:-start}"
  note "  the stream has $len_at_restart events now: $((len_at_restart - lines1)) came while the tail was away"
  show_log "$tail2" "$tail_pid" 5 resumed
  phase=run2
}
if [ "$have_redis" = 1 ] && [ -n "$stream_key" ]; then
  while :; do
    running=1
    kill -0 "$watcher_pid" 2>/dev/null || running=0
    if [ "$phase" = run1 ] && { [ "$(wc -l <"$tail1")" -ge "$stop_at" ] || [ "$running" = 0 ]; }; then
      stop_tail
      rc1=$?
      lines1=$(wc -l <"$tail1")
      last1=$(last_id_of "$tail1")
      note "tail stopped (SIGTERM, exit $rc1) after $lines1 events; its last id: ${last1:-none}"
      restart_at=$((lines1 + 2 * mails))
      phase=away
    fi
    if [ "$phase" = away ] && { [ "$(xlen)" -ge "$restart_at" ] 2>/dev/null || [ "$running" = 0 ]; }; then
      resume_tail
    fi
    [ "$running" = 0 ] && break
    sleep 0.05
  done
fi
wait "$watcher_pid"
wrc=$?
watcher_pid=""
cat "$work/watcher.out"
[ "$wrc" = 130 ] && die "interrupted"
[ "$wrc" = 0 ] || die "the demo watcher failed (exit $wrc)"

# The watcher's own counts: events by type and the publisher's counters.
watcher_count() { awk -v t="$1" '$1 == t { print $2; exit }' "$work/watcher.out"; }
published=$(grep -o ' published=[0-9]*' "$work/watcher.out" | head -n 1 | cut -d= -f2)

# ---- let the tail catch up, then stop it ---------------------------------------------------
if [ "$have_redis" = 1 ]; then
  for _ in $(seq 1 100); do
    got=$(cat "$tail1" "$tail2" | wc -l)
    [ "$got" -ge "${published:-0}" ] && break
    sleep 0.05
  done
  stop_tail
  rc2=$?
  for f in tail1.err tail2.err; do
    [ -s "$work/$f" ] && { echo "the tail said on stderr ($f):"; sed 's/^/  /' "$work/$f"; }
  done
  if [ -n "$stream_key" ]; then
    echo "the tail printed $(wc -l <"$tail1") events, was stopped, and printed $(wc -l <"$tail2") more after the resume;"
    echo "it exited 0 on SIGTERM both times: ${rc1:-?} and $rc2"
    { [ "$rc1" = 0 ] && [ "$rc2" = 0 ]; } || die "the tail did not exit 0 on SIGTERM"
  else
    echo "the tail received $(wc -l <"$tail1") events; it exited $rc2 on SIGTERM"
    [ "$rc2" = 0 ] || die "the tail did not exit 0 on SIGTERM"
  fi
  # What Redis holds, for the check below: every entry, id and bytes.
  if [ -n "$stream_key" ]; then
    redis-cli -p "$MAE_REDIS_PORT" --raw XRANGE "$stream_key" - + >"$work/xrange.txt" ||
      die "redis-cli XRANGE $stream_key failed"
    stream_len=$(xlen)
  fi
fi

# ---- what curl -N received from the relay -------------------------------------------------
relay_events=""
if [ -n "$relay_pid" ]; then
  for _ in $(seq 1 100); do
    relay_events=$(grep -c '^event: mailagent$' "$work/relay.sse")
    [ "$relay_events" -ge "${published:-0}" ] && break
    sleep 0.05
  done
  say "the relay's stream as curl -N sees it (first frames)"
  head -n 14 "$work/relay.sse" | cut -c 1-150 | sed 's/^/  sse| /'
  echo "  sse| ..."
  kill "$curl_pid" 2>/dev/null
  wait "$curl_pid" 2>/dev/null
  curl_pid=""
  kill -TERM "$relay_pid" 2>/dev/null
  wait "$relay_pid"
  rrc=$?
  relay_pid=""
  echo "curl received $relay_events events through the relay; the relay stopped on SIGTERM (exit $rrc)"
  [ "$rrc" = 0 ] || die "the relay exited with $rrc on SIGTERM"
fi

# ---- reconciliation reads -------------------------------------------------------------------
for cmd in "admin stats" "admin queue-depth" "llm stats"; do
  say "mailagent $cmd"
  # shellcheck disable=SC2086
  "$cli" $cmd || die "mailagent $cmd failed"
  # shellcheck disable=SC2086
  "$cli" $cmd --json >"$work/${cmd// /-}.json" || die "mailagent $cmd --json failed"
done

# ---- agreement ----------------------------------------------------------------------------------
say "AGREEMENT (stream: what the tail received; watcher: counted from return codes; db: the reads)"
export MAE_DEMO_WORK=$work MAE_DEMO_HAVE_EVENTS=$have_redis MAE_DEMO_PUBLISHED=${published:-}
export MAE_DEMO_RELAY_EVENTS=${relay_events:-} MAE_DEMO_STREAM_KEY=$stream_key
export MAE_DEMO_STREAM_LEN=${stream_len:-} MAE_DEMO_LAST1=${last1:-}
export MAE_DEMO_LEN_AT_RESTART=${len_at_restart:-} MAE_DEMO_ID_AT_RESTART=${id_at_restart:-}
for t in email.synced email.dead_letter outbox.enqueued outbox.dead_letter llm.success llm.gave_up; do
  export "MAE_DEMO_W_${t//./_}=$(watcher_count "$t")"
done

if command -v python3 >/dev/null 2>&1; then
  python3 - <<'PY'
import json, os, re, sys

work = os.environ["MAE_DEMO_WORK"]
have_events = os.environ["MAE_DEMO_HAVE_EVENTS"] == "1"
stream_mode = have_events and bool(os.environ.get("MAE_DEMO_STREAM_KEY"))

def env_int(name):
    v = os.environ.get(name) or None
    return int(v) if v else None

def load(name):
    with open(os.path.join(work, name), encoding="utf-8") as f:
        return json.load(f)

def lines_of(name):
    # Bytes kept as they are (surrogateescape): the comparisons below are
    # byte for byte.
    with open(os.path.join(work, name), encoding="utf-8", errors="surrogateescape") as f:
        return [l.rstrip("\n") for l in f if l.strip()]

def get(obj, path, default=None):
    """The number at a dotted path of the CLI's JSON, or default."""
    cur = obj
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return default
        cur = cur[part]
    return int(cur) if isinstance(cur, (int, float)) and not isinstance(cur, bool) else default

def count(obj, parent, key):
    """A count of a by_status object: a status with no rows is left out."""
    return get(obj, parent + "." + key, 0 if isinstance(get_obj(obj, parent), dict) else None)

def get_obj(obj, path):
    for part in path.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj

def id_key(i):
    ms, seq = i.split("-")
    return (int(ms), int(seq))

stats = load("admin-stats.json")
depth = load("admin-queue-depth.json")
llm = load("llm-stats.json")

# What the tail printed, by type. In stream mode each line is
# {"id":"ID","event":EVENT} with the event byte for byte, from two runs:
# before it was stopped and after the resume. A line that is not one JSON
# event is a failure of its own (the contract says every message is valid
# JSON).
LINE = re.compile(r'^\{"id":"([0-9]+-[0-9]+)","event":(.*)\}$', re.S)
runs = [lines_of("tail1.jsonl"), lines_of("tail2.jsonl")] if have_events else [[], []]
entries = []       # (id, event bytes) of both runs, in the order printed
by_type, bad = {}, 0
for run, lines in enumerate(runs):
    for line in lines:
        if stream_mode:
            m = LINE.match(line)
            if not m:
                bad += 1
                continue
            eid, raw = m.group(1), m.group(2)
        else:
            eid, raw = None, line
        entries.append((run, eid, raw))
        try:
            t = json.loads(raw)["event_type"]
            if not isinstance(t, str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            bad += 1
            continue
        by_type[t] = by_type.get(t, 0) + 1
received = len(entries) + (bad if stream_mode else 0)

# On a fresh database every row was inserted once by this run, so rows are
# what outbox.enqueued counted.
checks = [
    ("email.synced", "emails synced", get(stats, "emails_synced")),
    ("email.dead_letter", "emails dead_letter", count(stats, "emails.by_status", "dead_letter")),
    ("outbox.enqueued", "outbox rows", get(stats, "outbox.total")),
    ("outbox.dead_letter", "outbox dead_letter", count(depth, "by_status", "dead_letter")),
    ("llm.success", "llm successes", get(llm, "successes")),
    ("llm.gave_up", "llm gave_up", count(llm, "by_status", "gave_up")),
]

failed = 0
def verdict(values):
    vals = [v for v in values if v is not None]
    if len(vals) != len(values):
        return "MISMATCH (missing)"
    return "OK" if len(set(vals)) == 1 else "MISMATCH"

def line(name, text, ok):
    global failed
    v = ok if isinstance(ok, str) else ("OK" if ok else "MISMATCH")
    failed += v != "OK"
    print("  %-19s %s  %s" % (name, text, v))

for etype, what, db in checks:
    w = env_int("MAE_DEMO_W_" + etype.replace(".", "_"))
    values = [db, w] + ([by_type.get(etype, 0)] if have_events else [])
    s = "%6d" % by_type.get(etype, 0) if have_events else "     -"
    line(etype, "stream %s  watcher %6s  db %-21s %6s" % (s, w if w is not None else "?", what,
                                                         db if db is not None else "?"),
         verdict(values))

pub = env_int("MAE_DEMO_PUBLISHED")
relay = env_int("MAE_DEMO_RELAY_EVENTS")
if stream_mode:
    # What Redis holds: redis-cli --raw XRANGE prints id, field, value a line
    # each (an event is one line of JSON).
    xr = lines_of("xrange.txt")
    stream = [(xr[i], xr[i + 2]) for i in range(0, len(xr) - 2, 3) if xr[i + 1] == "event"]
    xr_ok = len(xr) == 3 * len(stream)
    xlen = env_int("MAE_DEMO_STREAM_LEN")
    n1, n2 = len(runs[0]), len(runs[1])
    line("events received", "tail %6d (%d + %d after the resume)  published %s  XLEN %s"
         % (received, n1, n2, pub if pub is not None else "?", xlen if xlen is not None else "?"),
         verdict([received, pub, xlen, len(stream)]) if xr_ok else "MISMATCH (XRANGE unreadable)")

    ids = [e[1] for e in entries]
    in_order = all(id_key(a) < id_key(b) for a, b in zip(ids, ids[1:]))
    line("no id twice", "%d ids, %d distinct, %s" % (len(ids), len(set(ids)),
         "increasing across both runs" if in_order else "NOT in increasing order"),
         len(set(ids)) == len(ids) and in_order)

    # Exactly once, by id and by content: the two runs together are the
    # stream, entry for entry, id and bytes; and no two entries carry the
    # same event (a doubled publish would be a second id with equal bytes).
    same = [(e[1], e[2]) for e in entries] == stream
    first_diff = next((i for i, (a, b) in enumerate(zip([(e[1], e[2]) for e in entries], stream))
                       if a != b), min(len(entries), len(stream)))
    raws = [r for _, r in stream]
    line("exactly once", "tail = XRANGE id for id, byte for byte%s; %d distinct events in %d entries"
         % ("" if same else " (differs from entry %d)" % first_diff, len(set(raws)), len(raws)),
         same and len(set(raws)) == len(raws))

    # The resume: the second run starts right after the first run's last id
    # and first brings back what was published while the tail was away.
    last1 = os.environ.get("MAE_DEMO_LAST1") or None
    at_restart = os.environ.get("MAE_DEMO_ID_AT_RESTART") or None
    len_at_restart = env_int("MAE_DEMO_LEN_AT_RESTART")
    run2 = [e[1] for e in entries if e[0] == 1]
    missed = (len_at_restart - n1) if len_at_restart is not None else None
    back = sum(1 for i in run2 if at_restart and id_key(i) <= id_key(at_restart))
    # The entry after the last id the first run printed (after none: the
    # first entry) is where the second run must begin.
    nxt = stream[n1][0] if n1 < len(stream) else None
    starts_right = (last1 is None) == (n1 == 0) and \
        (last1 is None or (0 < n1 <= len(stream) and stream[n1 - 1][0] == last1)) and \
        (run2[0] == nxt if run2 else nxt is None or missed == 0)
    line("the resume", "--since %s: %s missed while stopped, %d brought back first, then %d live"
         % (last1 or "start", missed if missed is not None else "?", back, len(run2) - back),
         starts_right and missed == back)

    if relay is not None:
        frames, fid = [], None
        for l in lines_of("relay.sse"):
            if l.startswith("id: "):
                fid = l[4:]
            elif l.startswith("data: ") and fid is not None:
                frames.append((fid, l[6:]))
                fid = None
        line("events via SSE", "relay %6d frames, their id: and data: = XRANGE%s"
             % (relay, "" if frames == stream else " NOT (%d frames with an id)" % len(frames)),
             relay == pub and frames == stream)
    line("stream is JSON", "%d of %d lines are not a JSON event" % (bad, received), bad == 0)
elif have_events:
    line("events received", "stream %6d  publisher published %6s %22s"
         % (received, pub if pub is not None else "?", ""), verdict([received, pub]))
    if relay is not None:
        line("events via SSE", "relay  %6d  publisher published %6s %22s"
             % (relay, pub if pub is not None else "?", ""), verdict([relay, pub]))
    line("stream is JSON", "%d of %d lines are not a JSON event" % (bad, received), bad == 0)
else:
    print("  (no stream: redis-server was not available, so only the watcher and the db are compared)")

print()
print("AGREEMENT: %s" % ("OK" if failed == 0 else "%d MISMATCH" % failed))
sys.exit(1 if failed else 0)
PY
  rc=$?
  [ "$hub_failed" = 0 ] || { echo "demo: the HUB AGREEMENT (part 1) failed" >&2; exit 1; }
  exit $rc
fi

# Without python3: the same comparisons with grep over the JSON texts.
echo "  (python3 not found: a shorter check with grep)"
num() { grep -o "\"$2\"[[:space:]]*:[[:space:]]*[0-9]*" "$work/$1" | head -n 1 | grep -o '[0-9]*$'; }
failed=0
check() { # name stream watcher db
  local v=OK
  if [ -z "$3" ] || [ -z "$4" ] || [ "$3" != "$4" ] || { [ "$have_redis" = 1 ] && [ "$2" != "$3" ]; }; then
    v=MISMATCH; failed=$((failed + 1))
  fi
  printf '  %-19s stream %6s  watcher %6s  db %6s  %s\n' "$1" "$2" "$3" "$4" "$v"
}
sc() { [ "$have_redis" = 1 ] && cat "$tail1" "$tail2" | grep -c "\"event_type\":\"$1\"" || echo -; }
check email.synced "$(sc email.synced)" "$(watcher_count email.synced)" "$(num admin-stats.json emails_synced)"
check outbox.dead_letter "$(sc outbox.dead_letter)" "$(watcher_count outbox.dead_letter)" "$(num admin-queue-depth.json dead_letter)"
check llm.success "$(sc llm.success)" "$(watcher_count llm.success)" "$(num llm-stats.json successes)"
if [ "$have_redis" = 1 ]; then
  got=$(cat "$tail1" "$tail2" | wc -l) v=OK
  [ "$got" = "${published:-}" ] || { v=MISMATCH; failed=$((failed + 1)); }
  printf '  %-19s stream %6s  publisher published %6s  %s\n' "events received" "$got" "${published:-?}" "$v"
fi
if [ "$have_redis" = 1 ] && [ -n "$stream_key" ]; then
  ids=$(cat "$tail1" "$tail2" | sed -n 's/^{"id":"\([0-9]*-[0-9]*\)".*/\1/p')
  n=$(printf '%s\n' "$ids" | grep -c .) twice=$(printf '%s\n' "$ids" | sort | uniq -d | grep -c .) v=OK
  { [ "$n" = "$got" ] && [ "$n" = "${stream_len:-}" ] && [ "$twice" = 0 ]; } || { v=MISMATCH; failed=$((failed + 1)); }
  printf '  %-19s %s ids, %s twice, XLEN %s  %s\n' "no id twice" "$n" "$twice" "${stream_len:-?}" "$v"
fi
echo
[ "$failed" = 0 ] && echo "AGREEMENT: OK" || echo "AGREEMENT: $failed MISMATCH"
[ "$failed" = 0 ] && [ "$hub_failed" = 0 ]
