#!/usr/bin/env bash
# `make demo`: builds the project in build/, starts a throwaway
# redis-server, runs the demo watcher (a simulated day of mail) with
# `mailagent events tail` listening beside it and the SSE relay
# (`mailagent events serve`) read by `curl -N`, then prints the
# reconciliation reads and an AGREEMENT check of the stream against the
# database. Exits non-zero on a mismatch.
#
#   MAE_DEMO_MAILS=N   mails in the simulated day (default 500)
#   MAE_DEMO_SEED=N    reproducible run (default: a new seed each time)
#   MAE_DEMO_FAST=1    do not pace the watcher
#   BUILD=dir          build tree (default build)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

build=${BUILD:-build}
mails=${MAE_DEMO_MAILS:-500}
channel=${MAILAGENT_CHANNEL:-mailagent:events:v1}
export MAILAGENT_CHANNEL=$channel

say() { printf '\n== %s\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

# ---- cleanup: runs on every exit, Ctrl-C included --------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/mae-demo.XXXXXX") || die "cannot create a temporary directory"
tail_pid=""
show_pid=""
relay_pid=""
curl_pid=""
MAE_REDIS_PID=""
MAE_REDIS_DIR=""
cleanup() {
  # Only the processes this script started, by their ids.
  [ -n "$show_pid" ] && kill "$show_pid" 2>/dev/null
  [ -n "$tail_pid" ] && kill "$tail_pid" 2>/dev/null && wait "$tail_pid" 2>/dev/null
  [ -n "$curl_pid" ] && kill "$curl_pid" 2>/dev/null && wait "$curl_pid" 2>/dev/null
  [ -n "$relay_pid" ] && kill "$relay_pid" 2>/dev/null && wait "$relay_pid" 2>/dev/null
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

# ---- redis ------------------------------------------------------------------------
have_redis=0
if out=$(scripts/redis-throwaway.sh start); then
  eval "$out"
  have_redis=1
  say "redis-server on 127.0.0.1:$MAE_REDIS_PORT (throwaway, no persistence), channel $channel"
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
stream=$work/stream.jsonl
: >"$stream"

# ---- the tail -----------------------------------------------------------------------
# Clear the watcher's progress line before each stream line on a terminal.
clr=""
[ -t 1 ] && [ -t 2 ] && clr=$'\r\033[K'
if [ "$have_redis" = 1 ]; then
  "$cli" events tail --json >"$stream" 2>"$work/tail.err" &
  tail_pid=$!
  # Redis keeps no history: wait until the tail is subscribed, or the
  # first events would be lost before anyone listens.
  subscribed=0
  for _ in $(seq 1 100); do
    n=$(redis-cli -p "$MAE_REDIS_PORT" PUBSUB NUMSUB "$channel" 2>/dev/null | sed -n 2p)
    if [ "${n:-0}" -ge 1 ] 2>/dev/null; then subscribed=1; break; fi
    kill -0 "$tail_pid" 2>/dev/null || break
    sleep 0.05
  done
  if [ "$subscribed" != 1 ]; then
    cat "$work/tail.err" >&2
    die "mailagent events tail did not subscribe to $channel"
  fi
  say "mailagent events tail --json is listening (first 15 events shown, all kept in the log)"
  # tail --pid ends the follower when the CLI's tail is stopped.
  tail -n +1 -f --pid="$tail_pid" "$stream" 2>/dev/null |
    awk -v max=15 -v clr="$clr" '{ printf "%s  stream| %s\n", clr, substr($0, 1, 150); fflush();
                                  if (++n >= max) { printf "%s  stream| ...\n", clr; fflush(); exit } }' &
  show_pid=$!
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
  say "mailagent events serve: the SSE relay on http://127.0.0.1:$relay_port/api/events/stream"
  echo "  curl -N http://127.0.0.1:$relay_port/api/events/stream   is reading it"
  echo "  dashboard: http://127.0.0.1:$relay_port/   (live while the watcher runs)"
fi

# ---- the watcher ------------------------------------------------------------------------
say "demo watcher: a simulated day of $mails mails"
wargs=(--mails "$mails" --db "$MAILAGENT_DB")
[ -n "${MAE_DEMO_SEED:-}" ] && wargs+=(--seed "$MAE_DEMO_SEED")
[ "${MAE_DEMO_FAST:-0}" = 1 ] && wargs+=(--fast)
"$watcher" "${wargs[@]}" >"$work/watcher.out"
wrc=$?
cat "$work/watcher.out"
[ "$wrc" = 130 ] && die "interrupted"
[ "$wrc" = 0 ] || die "the demo watcher failed (exit $wrc)"

# The watcher's own counts: events by type and the publisher's counters.
watcher_count() { awk -v t="$1" '$1 == t { print $2; exit }' "$work/watcher.out"; }
published=$(grep -o ' published=[0-9]*' "$work/watcher.out" | head -n 1 | cut -d= -f2)

# ---- let the tail catch up ---------------------------------------------------------------
if [ "$have_redis" = 1 ]; then
  for _ in $(seq 1 100); do
    got=$(wc -l <"$stream")
    [ "$got" -ge "${published:-0}" ] && break
    sleep 0.05
  done
  kill "$tail_pid" 2>/dev/null
  wait "$tail_pid" 2>/dev/null
  tail_pid=""
  wait "$show_pid" 2>/dev/null
  show_pid=""
  echo "the tail received $(wc -l <"$stream") events (log: $stream, removed at exit)"
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
  head -n 13 "$work/relay.sse" | cut -c 1-150 | sed 's/^/  sse| /'
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
export MAE_DEMO_WORK=$work MAE_DEMO_HAVE_STREAM=$have_redis MAE_DEMO_PUBLISHED=${published:-}
export MAE_DEMO_RELAY_EVENTS=${relay_events:-}
for t in email.synced email.dead_letter outbox.enqueued outbox.dead_letter llm.success llm.gave_up; do
  export "MAE_DEMO_W_${t//./_}=$(watcher_count "$t")"
done

if command -v python3 >/dev/null 2>&1; then
  python3 - <<'PY'
import json, os, sys

work = os.environ["MAE_DEMO_WORK"]
have_stream = os.environ["MAE_DEMO_HAVE_STREAM"] == "1"

def load(name):
    with open(os.path.join(work, name), encoding="utf-8") as f:
        return json.load(f)

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

stats = load("admin-stats.json")
depth = load("admin-queue-depth.json")
llm = load("llm-stats.json")

# What the tail received, by type; a line that is not one JSON event is a
# failure of its own (the contract says every message is valid JSON).
by_type, received, bad = {}, 0, 0
if have_stream:
    with open(os.path.join(work, "stream.jsonl"), encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            received += 1
            try:
                ev = json.loads(line)
                t = ev["event_type"]
            except (ValueError, KeyError, TypeError):
                bad += 1
                continue
            by_type[t] = by_type.get(t, 0) + 1

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

for etype, what, db in checks:
    w = os.environ.get("MAE_DEMO_W_" + etype.replace(".", "_")) or None
    w = int(w) if w else None
    values = [db, w] + ([by_type.get(etype, 0)] if have_stream else [])
    v = verdict(values)
    failed += v != "OK"
    s = "%6d" % by_type.get(etype, 0) if have_stream else "     -"
    print("  %-19s stream %s  watcher %6s  db %-21s %6s  %s"
          % (etype, s, w if w is not None else "?", what, db if db is not None else "?", v))

if have_stream:
    pub = os.environ.get("MAE_DEMO_PUBLISHED") or None
    pub = int(pub) if pub else None
    v = verdict([received, pub])
    failed += v != "OK"
    print("  %-19s stream %6d  publisher published %6s %22s  %s"
          % ("events received", received, pub if pub is not None else "?", "", v))
    relay = os.environ.get("MAE_DEMO_RELAY_EVENTS") or None
    if relay is not None:
        v = verdict([int(relay), pub])
        failed += v != "OK"
        print("  %-19s relay  %6d  publisher published %6s %22s  %s"
              % ("events via SSE", int(relay), pub if pub is not None else "?", "", v))
    v = "OK" if bad == 0 else "MISMATCH"
    failed += bad != 0
    print("  %-19s %d of %d lines are not a JSON event  %s" % ("stream is JSON", bad, received, v))
else:
    print("  (no stream: redis-server was not available, so only the watcher and the db are compared)")

print()
print("AGREEMENT: %s" % ("OK" if failed == 0 else "%d MISMATCH" % failed))
sys.exit(1 if failed else 0)
PY
  exit $?
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
sc() { [ "$have_redis" = 1 ] && grep -c "\"event_type\":\"$1\"" "$stream" || echo -; }
check email.synced "$(sc email.synced)" "$(watcher_count email.synced)" "$(num admin-stats.json emails_synced)"
check outbox.dead_letter "$(sc outbox.dead_letter)" "$(watcher_count outbox.dead_letter)" "$(num admin-queue-depth.json dead_letter)"
check llm.success "$(sc llm.success)" "$(watcher_count llm.success)" "$(num llm-stats.json successes)"
if [ "$have_redis" = 1 ]; then
  got=$(wc -l <"$stream") v=OK
  [ "$got" = "${published:-}" ] || { v=MISMATCH; failed=$((failed + 1)); }
  printf '  %-19s stream %6s  publisher published %6s  %s\n' "events received" "$got" "${published:-?}" "$v"
fi
echo
[ "$failed" = 0 ] && echo "AGREEMENT: OK" || echo "AGREEMENT: $failed MISMATCH"
[ "$failed" = 0 ]
