"""Every code block in docs/*.md that a reader would paste runs here, as
written, against real servers on loopback ports chosen here (issue 18 #7).
The blocks are read from the markdown by their fence language, so the block
edited in the doc is the block tested.

Usage: snippets_test.py --cli MAILAGENT --demo DEMO_WATCHER --out DIR [--list] [--only LANG]
       snippets_test.py --check-wrapper --out DIR   (the sh wrapper's signals only)

What each fence language gets:
  sh       run by bash in a sandbox, each command line wrapped as
           `timeout --foreground 3 LINE` (export lines and comments as they
           are; why --foreground: at PRELUDE): it must
           exit 0, or still be running after 3 s (a server, a follower,
           `curl -N`), and write something; a curl line must get the
           relay's `retry:` line, a relay must say it is listening.
           Events are published on the channel every 0.2 s meanwhile.
  python   run by /usr/bin/python3 against a relay in pub/sub mode, while
           events are published: normal ones, one without event_type, one
           that is not a JSON object, one that is not JSON, one over
           --max-event-bytes (a `skipped` frame), then Redis is restarted
           (a `reset` frame) and one more event must come through.
  js       evaluated in headless Chromium in a page of the relay's origin
           (its /healthz), console.log/warn recorded: the `mailagent`,
           `skipped` and `reset` listeners must each fire.
  json     each line must parse as JSON (samples of what is published).
  (none)   output samples, grammars, wire formats: not run.
  other    (c, cmake, nginx, ini, ...) must carry the marker, else the
           test fails.

The marker, on the line right before the fence, for a block that is not
meant to be pasted as it is (a fragment of a program, a configuration
file's part):

    <!-- snippet: not run: REASON -->

The substitutions, the only changes made to a block's text (the sandbox
stands in for "your machine"):
  127.0.0.1:9200               the relay's port here
  https://events.example.com   http://127.0.0.1:<the relay's port>
  redis://127.0.0.1:6379       the redis-server's URL here
  redis-cli                    redis-cli -p <its port>
  /var/lib/mailagent/mail.db   a database the demo watcher wrote
and the sandbox's environment: `mailagent` first on PATH,
MAILAGENT_REDIS_URL, WEBHOOK_SECRET=change-me (the relay's secret),
SSE_LOCAL_PORT (a free port, for a bare `mailagent events serve`), and a
file `last-id` in the working directory holding the id of an entry of the
stream `mailagent:events`, which the demo watcher filled.

Exit 0 pass, 1 fail, 77 skip (a prerequisite missing outside CI).
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "relay"))
from dashboard_test import REDIS, Env, Skip, check, free_port, need, wait_until  # noqa: E402

PYTHON = "/usr/bin/python3"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"
CHANNEL = "mailagent:events:v1"
SECRET = "change-me"
MARKER = re.compile(r"^<!-- snippet: not run: (.+\S) -->$")


# ---- the blocks ---------------------------------------------------------------------

class Block:
    def __init__(self, path, line, lang, text, marker):
        self.path, self.line, self.lang, self.text, self.marker = path, line, lang, text, marker

    def where(self):
        return f"{os.path.relpath(self.path, ROOT)}:{self.line}"


def blocks():
    out = []
    docs = os.path.join(ROOT, "docs")
    for name in sorted(os.listdir(docs)):
        if not name.endswith(".md"):
            continue
        path = os.path.join(docs, name)
        with open(path) as f:
            lines = f.read().split("\n")
        i = 0
        while i < len(lines):
            m = re.match(r"^```(\S*)\s*$", lines[i])
            if not m:
                i += 1
                continue
            start, lang = i, m.group(1)
            j = i + 1
            while j < len(lines) and lines[j] != "```":
                j += 1
            check(j < len(lines), f"{name}:{start + 1}: a fence that never closes")
            prev = lines[start - 1] if start > 0 else ""
            mk = MARKER.match(prev)
            out.append(Block(path, start + 1, lang, "\n".join(lines[start + 1:j]) + "\n",
                             mk.group(1) if mk else None))
            i = j + 1
    return out


# ---- the sandbox ----------------------------------------------------------------------

class Sandbox:
    def __init__(self, env, args):
        self.env, self.args = env, args
        self.dir = os.path.join(env.tmp, "sandbox")
        os.makedirs(os.path.join(self.dir, "bin"))
        os.symlink(os.path.abspath(args.cli), os.path.join(self.dir, "bin", "mailagent"))
        self.redis_url = f"redis://127.0.0.1:{env.redis_port}"
        self.db = os.path.join(self.dir, "mail.db")
        # The demo watcher writes the database and fills the stream.
        p = subprocess.run([args.demo, "--mails", "5", "--db", self.db, "--redis",
                            self.redis_url, "--stream", "mailagent:events", "--fast"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
        check(p.returncode == 0, f"demo_watcher failed: {p.stderr.decode()[-300:]}")
        first = env.r.xrange("mailagent:events", count=1)
        check(first, "the demo watcher filled no stream")
        with open(os.path.join(self.dir, "last-id"), "w") as f:
            f.write(first[0][0].decode() + "\n")

    def substitute(self, text):
        port = str(self.env.relay_port)
        text = text.replace("127.0.0.1:9200", "127.0.0.1:" + port)
        text = text.replace("https://events.example.com", "http://127.0.0.1:" + port)
        text = text.replace("redis://127.0.0.1:6379", self.redis_url)
        text = re.sub(r"\bredis-cli\b", f"{REDIS_CLI} -p {self.env.redis_port}", text)
        text = text.replace("/var/lib/mailagent/mail.db", self.db)
        return text

    def environ(self):
        e = dict(os.environ)
        e.update({"PATH": os.path.join(self.dir, "bin") + ":" + e.get("PATH", ""),
                  "MAILAGENT_REDIS_URL": self.redis_url, "WEBHOOK_SECRET": SECRET,
                  "SSE_LOCAL_PORT": str(free_port()), "PYTHONUNBUFFERED": "1"})
        for k in ("MAILAGENT_DB", "MAILAGENT_STREAM", "MAILAGENT_CHANNEL",
                  "MAILAGENT_LOCAL_API_TOKEN", "MAILAGENT_LOCAL_TOKEN", "REDIS_URL", "REDIS_DB"):
            e.pop(k, None)
        return e


class Publisher(threading.Thread):
    """Publishes a small event on the channel every 0.2 s until stopped."""

    def __init__(self, r):
        super().__init__(daemon=True)
        self.r, self.done, self.n = r, threading.Event(), 0

    def run(self):
        while not self.done.wait(0.2):
            self.n += 1
            try:
                self.r.publish(CHANNEL, json.dumps({"event_type": "snippet.tick",
                                                    "internal_id": self.n}))
            except Exception:
                pass   # Redis restarting


# ---- sh --------------------------------------------------------------------------------

# Each command gets SIGTERM after 3 s, and nothing else. A bare `timeout`
# also sends SIGCONT right after the SIGTERM (to wake a stopped job). A
# sanitizer build that exits at once on SIGTERM then runs LeakSanitizer's
# exit check, which stops the process with PTRACE_ATTACH (a queued SIGSTOP)
# and waits for it to stop; a SIGCONT arriving in that window discards the
# SIGSTOP and the wait never ends: `events tail` under ASan outlived the
# block's 120 s (reproduced: 2 hangs in 80 SIGTERM+SIGCONT pairs sent 0-1 ms
# apart). --foreground sends no SIGCONT; the commands here start no children
# of their own for it to miss. --check-wrapper tests exactly this.
PRELUDE = r'''
__n=0
__run() {
    __n=$((__n + 1))
    timeout --foreground 3 "$@" >"$__OUT/cmd$__n.out" 2>"$__OUT/cmd$__n.err" </dev/null
    printf '%s\t%s\t%s\n' "$__n" "$?" "$*" >>"$__OUT/rcs"
}
'''


def run_sh(sb, block, out):
    lines = []
    for line in sb.substitute(block.text).split("\n"):
        s = line.strip()
        if not s or s.startswith("#") or s.startswith("export "):
            lines.append(line)
        else:
            lines.append("__run " + line)
    os.makedirs(out, exist_ok=True)
    script = os.path.join(out, "block.sh")
    with open(script, "w") as f:
        f.write(PRELUDE + "\n".join(lines) + "\n")
    e = sb.environ()
    e["__OUT"] = out
    p = subprocess.run(["bash", script], cwd=sb.dir, env=e, timeout=120,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    check(p.returncode == 0, f"{block.where()}: the block failed: {p.stdout.decode()[-400:]}")
    rcs_path = os.path.join(out, "rcs")
    rcs = []
    if os.path.exists(rcs_path):   # absent when the block ran no command
        with open(rcs_path) as f:
            rcs = [r.split("\t", 2) for r in f.read().splitlines()]
    check(rcs, f"{block.where()}: no command ran")
    for n, rc, cmd in rcs:
        with open(os.path.join(out, f"cmd{n}.out"), errors="replace") as f:
            o = f.read()
        with open(os.path.join(out, f"cmd{n}.err"), errors="replace") as f:
            err = f.read()
        check(rc in ("0", "124"),
              f"{block.where()}: `{cmd}` exited {rc}: {(o + err)[-300:]}")
        check(o or err, f"{block.where()}: `{cmd}` wrote nothing in 3 s")
        if "events serve" in cmd:
            check("listening on http://" in err,
                  f"{block.where()}: `{cmd}` did not listen: {err[-300:]}")
        if cmd.startswith("curl"):
            check("retry: 3000" in o, f"{block.where()}: `{cmd}` got no stream: {o[:300]}")
        print(f"  ran `{cmd[:90]}`: exit {rc}, {len(o)} bytes out")


# What a command run by __run receives: written by PROBE to its stdout, one
# signal name a line, ended by "end" once SIGTERM came (or after 20 s).
PROBE = r'''
import signal, sys, time
got = []
for s in (signal.SIGTERM, signal.SIGCONT, signal.SIGINT, signal.SIGHUP):
    signal.signal(s, lambda n, f: got.append(signal.Signals(n).name))
t = time.monotonic()
while "SIGTERM" not in got and time.monotonic() - t < 20:
    time.sleep(0.05)
time.sleep(0.3)   # whatever is sent right after the SIGTERM
print("\n".join(got + ["end"]))
'''


def check_wrapper(out):
    """The sh wrapper ends a command with SIGTERM alone: no SIGCONT (see
    PRELUDE)."""
    os.makedirs(out, exist_ok=True)
    probe = os.path.join(out, "probe.py")
    with open(probe, "w") as f:
        f.write(PROBE)
    script = os.path.join(out, "block.sh")
    with open(script, "w") as f:
        f.write(PRELUDE + f"__run {PYTHON} {probe}\n")
    p = subprocess.run(["bash", script], cwd=out, env=dict(os.environ, __OUT=out), timeout=60,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    check(p.returncode == 0, f"the wrapper failed: {p.stdout.decode()[-300:]}")
    with open(os.path.join(out, "rcs")) as f:
        rcs = f.read().split("\t")
    with open(os.path.join(out, "cmd1.out")) as f:
        got = f.read().split()
    check(rcs[1] == "124", f"the wrapper's timeout did not fire: exit {rcs[1]}")
    check(got == ["SIGTERM", "end"], f"the command got {got[:-1]}, not SIGTERM alone")
    print(f"ok: the wrapper sends {got[0]} alone")


# ---- python ----------------------------------------------------------------------------

def run_python(sb, env, block, out):
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "snippet.py")
    with open(path, "w") as f:
        f.write(sb.substitute(block.text))
    log = os.path.join(out, "snippet.out")
    proc = subprocess.Popen([PYTHON, path], cwd=sb.dir, env=sb.environ(),
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)
    env.procs.append(proc)

    def text():
        with open(log, errors="replace") as f:
            return f.read()

    def say(msg):
        env.r.publish(CHANNEL, msg)

    # Connected when it prints what is published.
    check(wait_until(lambda: (say('{"event_type":"snippet.hello","internal_id":1}'),
                              "snippet.hello 1" in text())[1], 15, 0.2),
          f"{block.where()}: the snippet printed no event: {text()[-400:]}")
    say('{"no_type":true}')
    say('[1,2,3]')
    say('"a string"')
    say("not json at all")
    say('{"event_type":"big","data":"' + "a" * 3000 + '"}')
    say('{"event_type":"snippet.after_odd","internal_id":2}')
    check(wait_until(lambda: "snippet.after_odd 2" in text(), 10),
          f"{block.where()}: stopped after the odd frames: {text()[-600:]}")
    check("skipped {" in text(), f"{block.where()}: no skipped frame printed: {text()[-400:]}")
    # A Redis restart: the relay sends a reset frame when it is back.
    env.restart_redis()
    check(wait_until(lambda: (say('{"event_type":"snippet.back","internal_id":3}'),
                              "snippet.back 3" in text())[1], 20, 0.3),
          f"{block.where()}: nothing after a Redis restart: {text()[-600:]}")
    check("reset {" in text(), f"{block.where()}: no reset frame printed: {text()[-400:]}")
    check(proc.poll() is None, f"{block.where()}: the snippet ended: {text()[-600:]}")
    proc.terminate()
    proc.wait(timeout=5)
    print(f"  the loop printed {len(text().splitlines())} lines, reset and skipped among them")


# ---- js --------------------------------------------------------------------------------

def run_js(sb, env, block, out):
    os.makedirs(out, exist_ok=True)
    env.browser()
    base = f"http://127.0.0.1:{env.relay_port}"
    env.b.send("Page.navigate", {"url": base + "/healthz"})
    check(wait_until(lambda: env.js("document.readyState") == "complete", 20),
          "the page did not load")
    env.js("window.__log = []; for (const k of ['log', 'warn', 'error']) {"
           " const orig = console[k]; console[k] = (...a) => {"
           " window.__log.push(k + ' ' + a.map(x => typeof x === 'string' ? x"
           " : JSON.stringify(x)).join(' ')); orig.apply(console, a); }; }")
    # As written: top-level const in a script of the page's origin.
    env.js(block.text)
    seen = lambda: "\n".join(env.js("window.__log") or [])  # noqa: E731
    check(wait_until(lambda: (env.r.publish(CHANNEL, '{"event_type":"snippet.js"}'),
                              "snippet.js" in seen())[1], 15, 0.3),
          f"{block.where()}: the mailagent listener did not fire: {seen()[-300:]}")
    env.r.publish(CHANNEL, '{"event_type":"big","data":"' + "a" * 3000 + '"}')
    check(wait_until(lambda: "too large to send" in seen(), 10),
          f"{block.where()}: the skipped listener did not fire: {seen()[-300:]}")
    env.restart_redis()
    check(wait_until(lambda: "missed events?" in seen(), 20),
          f"{block.where()}: the reset listener did not fire: {seen()[-300:]}")
    with open(os.path.join(out, "console.txt"), "w") as f:
        f.write(seen())
    print(f"  console: {len(seen().splitlines())} lines, mailagent, skipped and reset among them")


def run_json(block):
    for k, line in enumerate(block.text.splitlines()):
        if line.strip():
            try:
                json.loads(line)
            except ValueError as e:
                raise AssertionError(f"{block.where()}: line {k + 1} is not JSON: {e}")


# ---- main ------------------------------------------------------------------------------

RUN = ("sh", "python", "js", "json")


def restart_redis(env):
    """Stops redis-server and starts it again on the same port (empty)."""
    old = env.redis_proc
    old.terminate()
    old.wait(timeout=10)
    env.procs.remove(old)
    port = env.redis_port
    env.redis_proc = env.spawn([REDIS, "--port", str(port), "--bind", "127.0.0.1",
                                "--save", "", "--appendonly", "no", "--dir", env.tmp],
                               os.path.join(env.out, "redis.log"))
    check(wait_until(lambda: env._ping(), 10), "redis-server did not restart")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cli")
    ap.add_argument("--demo")
    ap.add_argument("--out", required=True)
    ap.add_argument("--list", action="store_true", help="list the blocks and what they get")
    ap.add_argument("--only", help="run only the blocks of this language")
    ap.add_argument("--check-wrapper", action="store_true",
                    help="only check the signals the sh wrapper sends")
    args = ap.parse_args()
    if args.check_wrapper:
        try:
            check_wrapper(os.path.join(os.path.abspath(args.out), "docs_snippets_wrapper"))
        except AssertionError as e:
            print(f"FAIL: {e}")
            return 1
        return 0
    if not args.cli or not args.demo:
        ap.error("--cli and --demo are required")
    bs = blocks()
    missing = [b for b in bs if b.lang and b.lang not in RUN and not b.marker]
    for b in bs:
        what = ("not run: " + b.marker if b.marker else
                "run" if b.lang in RUN else "a sample (no language)" if not b.lang else
                "NOT COVERED")
        print(f"{b.where()} ```{b.lang}: {what}")
    if missing:
        print("FAIL: blocks neither run nor marked (see tests/docs/snippets_test.py): " +
              ", ".join(b.where() for b in missing))
        return 1
    if args.list:
        return 0
    args.out = os.path.join(os.path.abspath(args.out), "docs_snippets")
    env = Env(args)
    env.restart_redis = lambda: restart_redis(env)
    try:
        need(PYTHON)
        need(REDIS_CLI)
        env.redis()
        env.redis_proc = env.procs[-1]
        env.start_relay(["--max-event-bytes", "2048"], {"WEBHOOK_SECRET": SECRET})
        sb = Sandbox(env, args)
        for k, b in enumerate(bs):
            if b.marker or b.lang not in RUN or (args.only and b.lang != args.only):
                continue
            out = os.path.join(args.out, f"block{k}")
            print(f"{b.where()} ```{b.lang}")
            if b.lang == "json":
                run_json(b)
            elif b.lang == "sh":
                pub = Publisher(env.r)
                pub.start()
                try:
                    run_sh(sb, b, out)
                finally:
                    pub.done.set()
                    pub.join()
            elif b.lang == "python":
                run_python(sb, env, b, out)
            elif b.lang == "js":
                # EventSource sends no header: the relay open, on loopback.
                env.stop_relay()
                env.start_relay(["--max-event-bytes", "2048"], {"WEBHOOK_SECRET": ""})
                try:
                    run_js(sb, env, b, out)
                finally:
                    env.stop_relay()
                    env.start_relay(["--max-event-bytes", "2048"], {"WEBHOOK_SECRET": SECRET})
    except Skip as s:
        print(f"skipped: {s}")
        return 77
    except AssertionError as e:
        print(f"FAIL: {e}")
        return 1
    finally:
        env.stop()
    print("ok: every pasteable block ran")
    return 0


if __name__ == "__main__":
    sys.exit(main())
