#!/usr/bin/python3
"""The Python part of `make bench`: this package's drop-in safe_publish
against the design it replaces, side by side in one run, with Redis
healthy, hung (SIGSTOP) and refused (server stopped).

The replaced design, rebuilt as the seed page describes it: redis-py
(Debian's python3-redis), socket_timeout=2.0, one PUBLISH per call on the
caller's thread, every error swallowed.

Each call is timed with time.perf_counter_ns() on the caller's thread (the
timer's own cost is measured and printed, and included in every figure).
It starts its own redis-server on a free 127.0.0.1 port and stops it on
every exit (the server also dies with this process: PR_SET_PDEATHSIG).

    MAILAGENT_EVENTS_LIB=build-release/libmailagent-events.so.2 \\
        /usr/bin/python3 bench/python/bench_safe_publish.py [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bindings" / "python" / "src"))

import redis  # noqa: E402  (python3-redis)

CHANNEL = "mailagent:events:v1"


# ---- the replaced design --------------------------------------------------

def make_replaced(url: str) -> Callable[[str, Any, dict, str], None]:
    """safe_publish as the original system had it."""
    r = redis.Redis.from_url(url, socket_timeout=2.0)

    def safe_publish(event_type: str, internal_id: Any, data: dict, source: str) -> None:
        try:
            msg = json.dumps({"event_type": event_type, "ts": time.time(),
                              "internal_id": internal_id, "data": data or {},
                              "source": source}, ensure_ascii=False)
            r.publish(CHANNEL, msg)
        except Exception:
            pass

    return safe_publish


# ---- redis-server ---------------------------------------------------------

def _die_with_parent() -> None:
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class Server:
    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="mae-bench-py.")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--logfile", f"{self.dir}/redis.log"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        c = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
        for _ in range(250):
            try:
                if c.ping():
                    return
            except redis.exceptions.ConnectionError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError("redis-server did not start")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def hang(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


# ---- measuring ------------------------------------------------------------

def percentile(sorted_ns: List[int], q: float) -> int:
    i = min(len(sorted_ns) - 1, max(0, int(round(q / 100 * len(sorted_ns) + 0.5)) - 1))
    return sorted_ns[i]


def timed(fn: Callable[[str, Any, dict, str], None], n: int, budget_s: float) -> Dict[str, Any]:
    """n calls of fn (fewer if budget_s runs out), each timed."""
    samples: List[int] = []
    clock = time.perf_counter_ns
    stop_at = time.monotonic() + budget_s
    data = {"notion_page_id": "page-uuid-abc"}
    for i in range(n):
        t0 = clock()
        fn("email.synced", 53675 + i, data, "new_watcher")
        samples.append(clock() - t0)
        if time.monotonic() > stop_at:
            break
    samples.sort()
    return {"calls": len(samples), "p50_ns": percentile(samples, 50),
            "p99_ns": percentile(samples, 99), "max_ns": samples[-1]}


def timer_cost() -> int:
    clock = time.perf_counter_ns
    s = []
    for _ in range(10000):
        t0 = clock()
        s.append(clock() - t0)
    s.sort()
    return s[len(s) // 2]


def fmt(ns: float) -> str:
    if ns >= 1e9:
        return f"{ns / 1e9:.2f} s"
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.1f} µs"
    return f"{ns:.0f} ns"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer calls (for a smoke run)")
    ap.add_argument("--json", type=Path, help="write the figures to this file")
    args = ap.parse_args()
    n_ours = 5000 if args.quick else 50000
    n_old = 1000 if args.quick else 10000
    n_old_hung = 2 if args.quick else 5  # 2 s each

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    server = Server()
    results: Dict[str, Dict[str, Any]] = {}
    try:
        os.environ["MAILAGENT_REDIS_URL"] = server.url
        os.environ["MAILAGENT_CHANNEL"] = CHANNEL
        os.environ.pop("MAILAGENT_STREAM", None)
        from mailagent_events import default_publisher, library_version, safe_publish

        replaced = make_replaced(server.url)
        safe_publish("bench.warmup", None, {}, "cli")  # opens the publisher
        replaced("bench.warmup", None, {}, "cli")       # opens the connection
        default_publisher().flush(5000)

        def state(name: str) -> None:
            before = default_publisher().stats()
            ours = timed(safe_publish, n_ours, 60)
            after = default_publisher().stats()
            ours["dropped"] = sum(after[k] - before[k] for k in after if k.startswith("dropped_"))
            budget = 2.0 * n_old_hung + 1 if name == "hung" else 60
            old = timed(replaced, n_old_hung if name == "hung" else n_old, budget)
            results[name] = {"ours": ours, "replaced": old,
                             "ratio_p50": old["p50_ns"] / ours["p50_ns"],
                             "ratio_p99": old["p99_ns"] / ours["p99_ns"]}
            print(f"bench-python: {name} done", file=sys.stderr, flush=True)

        state("healthy")
        server.hang()
        try:
            state("hung")
        finally:
            server.resume()
        default_publisher().flush(10000)
        server.stop()
        state("refused")
        final = default_publisher().stats()
    finally:
        server.stop()

    tc = timer_cost()
    print()
    print("Python: safe_publish per call, this package vs the replaced design "
          "(redis-py, socket_timeout=2.0, one PUBLISH per call)")
    print(f"  timer cost {fmt(tc)} (included); Python {platform.python_version()}, "
          f"redis-py {redis.__version__}, libmailagent-events {library_version}; "
          f"{os.cpu_count()} CPUs")
    print(f"  {'Redis':<8} {'ours p50':>10} {'ours p99':>10} {'calls':>7} {'drops':>6}   "
          f"{'replaced p50':>12} {'replaced p99':>12} {'calls':>6}   {'ratio p50':>10} {'p99':>9}")
    for name, r in results.items():
        o, old = r["ours"], r["replaced"]
        print(f"  {name:<8} {fmt(o['p50_ns']):>10} {fmt(o['p99_ns']):>10} {o['calls']:>7} "
              f"{o['dropped']:>6}   {fmt(old['p50_ns']):>12} {fmt(old['p99_ns']):>12} "
              f"{old['calls']:>6}   {r['ratio_p50']:>9.0f}x {r['ratio_p99']:>8.0f}x")
    print(f"  ours, final counters: calls {final['calls']}, published {final['published']}, "
          f"dropped_send_error {final['dropped_send_error']}, queued {final['queued']}, "
          f"connect_failures {final['connect_failures']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "timer_cost_ns": tc, "python": platform.python_version(),
            "redis_py": redis.__version__, "quick": args.quick, "states": results,
            "final_counters": final}, indent=2) + "\n")
    worst = max(r["ours"]["p99_ns"] for r in results.values())
    print(f"bench-python: ours p99 at most {fmt(worst)} in every state; replaced p50 "
          f"hung {fmt(results['hung']['replaced']['p50_ns'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
