"""The drop-in: `from mailagent_events import safe_publish` in a fresh
interpreter, configured only by the environment, as the mail-sync system
would use it. Each case runs a small program in a child interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from typing import Any, Dict, Optional

import pytest

from conftest import free_port, LIB, PKG_SRC, Subscriber


def run(code: str, env: Optional[Dict[str, str]] = None, timeout: float = 60) -> Any:
    full = {k: v for k, v in os.environ.items() if not k.startswith("MAILAGENT_")}
    full.update({"MAILAGENT_EVENTS_LIB": str(LIB), "PYTHONPATH": str(PKG_SRC)})
    full.update(env or {})
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full,
                          capture_output=True, text=True, timeout=timeout)


def test_one_import_switch_publishes_and_flushes_at_exit(redis_server: Any, channel: str) -> None:
    sub = Subscriber(redis_server, channel)
    try:
        r = run("""
            import json
            from mailagent_events import safe_publish, default_publisher
            safe_publish("email.synced", 53675, {"notion_page_id": "page-uuid-abc"}, "new_watcher")
            safe_publish("outbox.enqueued", 53675,
                         {"outbox_id": 17, "op_type": "flag", "target": "notion", "source": "cli"},
                         "outbox")
            safe_publish("llm.gave_up", None, None, source="llm_agent")
            print(json.dumps(default_publisher().stats()))
            # no close: the exit handler sends what is queued
        """, {"MAILAGENT_REDIS_URL": redis_server.url, "MAILAGENT_CHANNEL": channel})
        assert r.returncode == 0, r.stderr
        st = json.loads(r.stdout)
        assert st["calls"] == 3 and st["dropped_invalid"] == 0
        got = sub.events(3)
        assert [(e["event_type"], e["internal_id"], e["source"]) for e in got] == [
            ("email.synced", 53675, "new_watcher"), ("outbox.enqueued", 53675, "outbox"),
            ("llm.gave_up", None, "llm_agent")]
        assert got[0]["data"] == {"notion_page_id": "page-uuid-abc"} and got[2]["data"] == {}
    finally:
        sub.close()


def test_bad_input_never_raises_and_is_counted(redis_server: Any, channel: str) -> None:
    r = run("""
        import json, math
        from mailagent_events import safe_publish, default_publisher
        class Hostile:
            def __str__(self): raise RuntimeError("no")
        # not serialisable, even by default=str (object() would now be sent
        # as its str, as MailAgent's json.dumps(..., default=str) does)
        safe_publish("x.y", 1, {"when": Hostile()}, "cli")
        safe_publish("x.y", 1, {"nan": math.nan}, "cli")     # not JSON
        safe_publish(None, 1, {}, "cli")                     # wrong type
        safe_publish("x.y", "1", {}, "cli")                  # wrong type
        safe_publish("", 1, {}, "cli")                       # judged by the library
        safe_publish("x.y", 1, [1], "cli")                   # not a dict
        safe_publish("ok.event", 1, {}, "cli")
        default_publisher().flush(5000)
        print(json.dumps(default_publisher().stats()))
    """, {"MAILAGENT_REDIS_URL": redis_server.url, "MAILAGENT_CHANNEL": channel})
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert st["calls"] == 7 and st["dropped_invalid"] == 6 and st["published"] == 1


def test_no_url_posts_to_the_local_hub_silently() -> None:
    """No Redis and no relay URL: the loopback hub of SSE_LOCAL_PORT (here
    a closed port): the event is queued and dropped, the caller never hears
    of it, the exit is not held up."""
    r = run("""
        import json
        from mailagent_events import safe_publish, default_publisher
        safe_publish("x.y", 1, {}, "cli")
        default_publisher().flush(3000)
        print(json.dumps(default_publisher().stats()))
    """, {"SSE_LOCAL_PORT": str(free_port())})
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert st["calls"] == 1 and st["dropped_disabled"] == 0 and st["published"] == 0
    assert "Traceback" not in r.stderr


def test_bad_url_is_said_once_and_never_raises() -> None:
    r = run("""
        from mailagent_events import safe_publish, default_publisher
        for i in range(3):
            safe_publish("x.y", i, {}, "cli")
        print(default_publisher().stats()["dropped_disabled"])
    """, {"MAILAGENT_REDIS_URL": "http://nope"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "3"
    assert r.stderr.count('unknown scheme "http"') == 1


def test_stream_variable_without_stream_mode_is_said(redis_server: Any, channel: str) -> None:
    r = run("""
        from mailagent_events import safe_publish, default_publisher, has_stream_mode
        safe_publish("x.y", 1, {}, "cli")
        default_publisher().flush(5000)
        print(has_stream_mode(), default_publisher().stats()["published"])
    """, {"MAILAGENT_REDIS_URL": redis_server.url, "MAILAGENT_CHANNEL": channel,
          "MAILAGENT_STREAM": "mailagent:events:stream"})
    assert r.returncode == 0, r.stderr
    mode, published = r.stdout.split()
    assert published == "1"
    if mode == "False":
        assert "MAILAGENT_STREAM" in r.stderr
    else:
        stream = redis_server.client().xrange("mailagent:events:stream")
        assert stream, "stream mode is on but nothing was added to the stream"


def test_exit_with_redis_hung_waits_only_the_close_timeout(own_redis: Any, channel: str) -> None:
    own_redis.pause()
    t0 = time.monotonic()
    r = run("""
        from mailagent_events import safe_publish
        for i in range(100):
            safe_publish("x.y", i, {}, "cli")
        print("published")
    """, {"MAILAGENT_REDIS_URL": own_redis.url, "MAILAGENT_CHANNEL": channel}, timeout=30)
    elapsed = time.monotonic() - t0
    assert r.returncode == 0 and r.stdout.strip() == "published", r.stderr
    # Close at exit waits at most 1 s for Redis; allow for interpreter start.
    assert elapsed < 10, elapsed


def test_forked_child_gets_its_own_default_publisher(redis_server: Any, channel: str) -> None:
    sub = Subscriber(redis_server, channel)
    try:
        r = run("""
            import os
            from mailagent_events import safe_publish, default_publisher
            safe_publish("parent.event", 1, {}, "cli")
            parent = default_publisher()
            pid = os.fork()
            if pid == 0:
                safe_publish("child.event", 2, {"pid": os.getpid()}, "cli")
                assert default_publisher() is not parent
                os._exit(0 if default_publisher().flush(5000) else 1)
            _, status = os.waitpid(pid, 0)
            assert os.WEXITSTATUS(status) == 0, status
            safe_publish("parent.again", 3, {}, "cli")
            assert default_publisher() is parent
        """, {"MAILAGENT_REDIS_URL": redis_server.url, "MAILAGENT_CHANNEL": channel})
        assert r.returncode == 0, r.stderr
        got = sorted(e["event_type"] for e in sub.events(3))
        assert got == ["child.event", "parent.again", "parent.event"]
    finally:
        sub.close()


def test_signature_matches_the_seed() -> None:
    import inspect

    from mailagent_events import safe_publish

    assert list(inspect.signature(safe_publish).parameters) == [
        "event_type", "internal_id", "data", "source"]
