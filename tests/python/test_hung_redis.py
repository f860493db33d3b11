"""Redis hung (SIGSTOP: the socket stays open, nothing answers) or refusing:
publishing still returns at once, the counters say what happened, close
keeps its deadline, and nothing queued is lost when Redis comes back.
Timings here are coarse guards (a hung call would take seconds); the
measured figures are in bench/python."""

from __future__ import annotations

import time
from typing import Any

from conftest import Subscriber
from mailagent_events import Publisher

N = 1000


def adds_up(st: dict) -> bool:
    return (st["calls"] == st["enqueued"] + st["dropped_queue_full"] + st["dropped_disabled"]
            + st["dropped_invalid"]
            and st["enqueued"] == st["published"] + st["dropped_send_error"] + st["queued"]
            + st["in_flight"])


def test_hung_redis_does_not_hold_the_caller(own_redis: Any, channel: str) -> None:
    sub = Subscriber(own_redis, channel)
    p = Publisher(own_redis.url, channel=channel)
    try:
        p.publish("before.hang", 0, None, "cli")
        assert p.flush(5000)
        own_redis.pause()
        t0 = time.monotonic()
        for i in range(1, N + 1):
            p.publish("during.hang", i, {"i": i}, "cli")
        elapsed = time.monotonic() - t0
        assert elapsed < 1.0, f"{N} calls took {elapsed:.3f} s against a hung Redis"
        st = p.stats()
        assert st["calls"] == N + 1 and st["enqueued"] == N + 1 and st["published"] == 1
        assert st["queued"] + st["in_flight"] == N and adds_up(st)
        assert p.flush(200) is False  # the deadline passed, nothing acknowledged
        own_redis.resume()
        assert p.flush(20000)
        st = p.stats()
        assert adds_up(st) and st["queued"] == 0 and st["in_flight"] == 0
        # Events the I/O timeout caught in flight may be lost (at-most-once),
        # the ones still queued are not; the subscriber saw every published one.
        assert st["published"] + st["dropped_send_error"] == N + 1
        assert st["published"] >= N + 1 - 300
        assert len(sub.take(st["published"], timeout=20)) == st["published"]
    finally:
        own_redis.resume()
        p.close(5000)
        sub.close()


def test_close_keeps_its_deadline_when_redis_is_hung(own_redis: Any, channel: str) -> None:
    p = Publisher(own_redis.url, channel=channel)
    p.publish("before.hang", 0, None, "cli")
    assert p.flush(5000)
    own_redis.pause()
    for i in range(100):
        p.publish("during.hang", i, None, "cli")
    t0 = time.monotonic()
    assert p.close(300) is False  # events were abandoned, and it says so
    assert time.monotonic() - t0 < 2.0
    assert p.closed


def test_refused_redis_does_not_hold_the_caller(own_redis: Any, channel: str) -> None:
    url = own_redis.url
    own_redis.close()
    with Publisher(url, channel=channel, backoff_min_ms=10, backoff_max_ms=50) as p:
        t0 = time.monotonic()
        for i in range(N):
            p.publish_email_synced(i + 1, "page")
        assert time.monotonic() - t0 < 1.0
        deadline = time.monotonic() + 10
        while p.stats()["connect_failures"] < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        st = p.stats()
        assert st["calls"] == N and st["published"] == 0 and st["connect_failures"] >= 2
        assert st["connected"] is False and "refused" in st["last_error"].lower()
        assert adds_up(st)
        assert p.close(100) is False
