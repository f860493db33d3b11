"""Publisher through Python: the exact envelope a real subscriber receives,
the typed builders, the counters, and what bad input and a closed handle
give."""

from __future__ import annotations

import json
import math
import re
import time
from typing import Any, List, Tuple

import pytest

import mailagent_events as mae
from mailagent_events import Publisher

ENVELOPE_KEYS = ["event_type", "ts", "internal_id", "data", "source"]


def pairs(raw: bytes) -> List[Tuple[str, Any]]:
    """The top-level (key, value) pairs in their order on the wire."""
    return json.loads(raw, object_pairs_hook=lambda kv: kv)


def test_envelope_bytes_seen_by_a_subscriber(publisher: Publisher, subscriber: Any) -> None:
    before = time.time()
    publisher.publish("email.synced", 53675, {"notion_page_id": "page-é/☃"}, "new_watcher")
    publisher.publish("custom.event", None, None, "cli")
    assert publisher.flush(5000)
    first, second = subscriber.take(2)
    # One line of compact JSON, keys in the contract's order, non-ASCII as
    # raw UTF-8 and "/" unescaped (docs/events.md).
    assert re.fullmatch(
        rb'\{"event_type":"email\.synced","ts":\d+\.\d{1,6},"internal_id":53675,'
        rb'"data":\{"notion_page_id":"page-\xc3\xa9/\xe2\x98\x83"\},"source":"new_watcher"\}',
        first,
    ), first
    assert [k for k, _ in pairs(first)] == ENVELOPE_KEYS
    ts = json.loads(first)["ts"]
    assert before - 1 <= ts <= time.time() + 1
    # internal_id None is null, data None is {} (never null).
    assert re.fullmatch(
        rb'\{"event_type":"custom\.event","ts":\d+\.\d{1,6},"internal_id":null,'
        rb'"data":\{\},"source":"cli"\}',
        second,
    ), second


def test_data_dict_is_serialised_as_given(publisher: Publisher, subscriber: Any) -> None:
    data = {"b": [1, 2.5, None, True], "a": {"nested": "x"}, "text": "日本"}
    publisher.publish("x.y", 1, data, "cli")
    publisher.publish("x.y", 2, '{"raw": "json text"}', "cli")
    assert publisher.flush(5000)
    a, b = subscriber.take(2)
    assert json.loads(a)["data"] == data
    assert "日本".encode() in a and b"\\u" not in a
    assert json.loads(b)["data"] == {"raw": "json text"}


BUILDERS = [
    ("publish_email_synced", (7, "page-1", None), "email.synced", "sync_store",
     {"notion_page_id": "page-1"}),
    ("publish_email_synced", (7, "page-1", "new_watcher"), "email.synced", "new_watcher",
     {"notion_page_id": "page-1"}),
    ("publish_email_failed", (7, "fetch_failed", 2, 1716096300.5, "imap timeout"),
     "email.failed", "sync_store",
     {"status": "fetch_failed", "retry_count": 2, "next_retry_at": 1716096300.5,
      "error": "imap timeout"}),
    ("publish_email_dead_letter", (7, 5, "gone"), "email.dead_letter", "sync_store",
     {"retry_count": 5, "error": "gone"}),
    ("publish_outbox_enqueued", (7, 17, "flag", "notion", "cli"), "outbox.enqueued", "outbox",
     {"outbox_id": 17, "op_type": "flag", "target": "notion", "source": "cli"}),
    ("publish_outbox_enqueued", (7, 17, "flag", "mailapp", None), "outbox.enqueued", "outbox",
     {"outbox_id": 17, "op_type": "flag", "target": "mailapp", "source": None}),
    ("publish_outbox_done", (7, 17), "outbox.done", "outbox", {"outbox_id": 17}),
    ("publish_outbox_failed", (7, 17, 1, "429", 1716096060.0), "outbox.failed", "outbox",
     {"outbox_id": 17, "attempts": 1, "last_error": "429", "next_retry_at": 1716096060.0}),
    ("publish_outbox_dead_letter", (7, 17, 5, "429"), "outbox.dead_letter", "outbox",
     {"outbox_id": 17, "attempts": 5, "last_error": "429"}),
    ("publish_llm_success", (7, "claude", 1200, 80, 950), "llm.success", "llm_agent",
     {"model": "claude", "input_tokens": 1200, "output_tokens": 80, "latency_ms": 950}),
    ("publish_llm_failed", (7, 1, 1716096060.25, "529"), "llm.failed", "llm_agent",
     {"retry_count": 1, "next_retry_at": 1716096060.25, "error": "529"}),
    ("publish_llm_gave_up", (7, 5, "upstream 529: overloaded"), "llm.gave_up", "llm_agent",
     {"retry_count": 5, "error": "upstream 529: overloaded"}),
]


def test_typed_builders_publish_the_contract(publisher: Publisher, subscriber: Any) -> None:
    for method, args, *_ in BUILDERS:
        getattr(publisher, method)(*args)
    assert publisher.flush(5000)
    got = subscriber.take(len(BUILDERS))
    assert len(got) == len(BUILDERS)
    for raw, (method, _, event_type, source, data) in zip(got, BUILDERS):
        ev = json.loads(raw)
        assert [k for k, _ in pairs(raw)] == ENVELOPE_KEYS, method
        assert (ev["event_type"], ev["internal_id"], ev["source"]) == (event_type, 7, source)
        assert ev["data"] == data, method
        assert [k for k, _ in json.loads(raw, object_pairs_hook=lambda kv: kv)[3][1]] == list(data)


def test_error_texts_are_cut_to_200_code_points(publisher: Publisher, subscriber: Any) -> None:
    publisher.publish_llm_gave_up(7, 5, "é" * 300)
    assert publisher.flush(5000)
    (raw,) = subscriber.take(1)
    assert json.loads(raw)["data"]["error"] == "é" * 200


def test_counters_add_up(publisher: Publisher, subscriber: Any) -> None:
    for i in range(50):
        publisher.publish("x.y", i, {"i": i}, "cli")
    publisher.publish("", 1, None, "cli")  # judged by the library: dropped_invalid
    publisher.publish("x.y", 1, "[1, 2]", "cli")  # not an object: dropped_invalid
    assert publisher.flush(5000)
    st = publisher.stats()
    assert len(subscriber.take(50)) == 50
    assert st["calls"] == 52
    assert st["enqueued"] == 50 and st["published"] == 50
    assert st["dropped_invalid"] == 2
    assert st["connected"] is True and st["connects"] >= 1
    assert st["last_error"] == "" and st["last_error_at"] == 0.0
    assert st["calls"] == (st["enqueued"] + st["dropped_queue_full"] + st["dropped_disabled"]
                           + st["dropped_invalid"])
    assert st["enqueued"] == (st["published"] + st["dropped_send_error"] + st["queued"]
                              + st["in_flight"])


def test_disabled_publisher_only_counts() -> None:
    for url in (None, ""):
        with Publisher(url) as p:
            p.publish("x.y", 1, {}, "cli")
            p.publish_outbox_done(1, 2)
            assert p.flush(0)
            st = p.stats()
            assert st["dropped_disabled"] == 2 and st["calls"] == 2 and st["enqueued"] == 0


@pytest.mark.parametrize("url, message", [
    ("http://x", 'unknown scheme "http"'),
    ("redis://127.0.0.1:99999", 'port "99999" is out of range'),
])
def test_bad_url_raises_with_the_library_reason(url: str, message: str) -> None:
    with pytest.raises(mae.InvalidArgument) as e:
        Publisher(url)
    assert message in str(e.value)
    assert e.value.code == -1 and isinstance(e.value, ValueError)


def test_bad_config_values() -> None:
    with pytest.raises(mae.InvalidArgument, match="channel must not be empty"):
        Publisher("redis://127.0.0.1:1", channel="")
    with pytest.raises(mae.InvalidArgument, match="queue bounds"):
        Publisher("redis://127.0.0.1:1", queue_max_events=0)
    with pytest.raises(mae.InvalidArgument, match="must not be negative"):
        Publisher("redis://127.0.0.1:1", queue_max_bytes=-1)
    with pytest.raises(TypeError):
        Publisher("redis://127.0.0.1:1", io_timeout_ms="fast")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Publisher("redis://127.0.0.1:1", nonsense=1)  # type: ignore[call-arg]
    if not mae.has_stream_mode():
        with pytest.raises(mae.InvalidArgument, match="stream_key"):
            Publisher("redis://127.0.0.1:1", stream_key="s")


def test_wrong_types_and_unserialisable_data_raise(publisher: Publisher) -> None:
    with pytest.raises(TypeError, match="event_type"):
        publisher.publish(None, 1, {}, "cli")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="internal_id"):
        publisher.publish("x.y", "53675", {}, "cli")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="internal_id"):
        publisher.publish("x.y", True, {}, "cli")
    with pytest.raises(TypeError, match="data must be a dict"):
        publisher.publish("x.y", 1, [1, 2], "cli")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not JSON serialisable"):
        publisher.publish("x.y", 1, {"when": object()}, "cli")
    with pytest.raises(mae.InvalidArgument, match="not valid JSON"):
        publisher.publish("x.y", 1, {"x": math.nan}, "cli")
    with pytest.raises(mae.InvalidArgument, match="int64"):
        publisher.publish("x.y", 2**63, {}, "cli")
    with pytest.raises(mae.InvalidArgument, match="NUL"):
        publisher.publish("x\0y", 1, {}, "cli")
    with pytest.raises(TypeError, match="retry_count"):
        publisher.publish_email_dead_letter(1, 2.5, "e")  # type: ignore[arg-type]
    # None of them reached the library.
    assert publisher.stats()["calls"] == 0


def test_use_after_close_raises_closed(redis_server: Any, channel: str) -> None:
    p = Publisher(redis_server.url, channel=channel)
    p.publish("x.y", 1, {}, "cli")
    assert p.close(2000) is True
    assert p.closed
    for call in (lambda: p.publish("x.y", 1, {}, "cli"), lambda: p.publish_outbox_done(1, 2),
                 p.stats, p.flush):
        with pytest.raises(mae.Closed, match="publisher is closed"):
            call()
    assert p.close() is True  # closing again does nothing
    with Publisher(redis_server.url, channel=channel) as q:
        q.publish("x.y", 1, {}, "cli")
    with pytest.raises(mae.Closed):
        q.publish("x.y", 1, {}, "cli")


def test_log_callback_hears_connect_failures(own_redis: Any) -> None:
    url = own_redis.url
    own_redis.close()  # refused from now on
    heard: List[Tuple[int, str, int]] = []
    with Publisher(url, log=lambda level, msg, rep: heard.append((level, msg, rep)),
                   backoff_min_ms=10, backoff_max_ms=50) as p:
        p.publish("x.y", 1, {}, "cli")
        deadline = time.monotonic() + 10
        while not heard and time.monotonic() < deadline:
            time.sleep(0.02)
        st = p.stats()
        assert st["connect_failures"] >= 1 and st["connected"] is False
        assert st["last_error"] and st["last_error_at"] > 0
        assert p.close(100) is False  # the event was never sent
    assert heard, "no log line about the refused connection"
    level, msg, _ = heard[0]
    assert level in (mae.LOG_ERROR, mae.LOG_WARN) and msg


def test_a_raising_log_callback_does_not_reach_c(own_redis: Any) -> None:
    url = own_redis.url
    own_redis.close()
    calls = []

    def bad(level: int, msg: str, repeats: int) -> None:
        calls.append(msg)
        raise RuntimeError("callback bug")

    with Publisher(url, log=bad, backoff_min_ms=10) as p:
        p.publish("x.y", 1, {}, "cli")
        deadline = time.monotonic() + 10
        while not calls and time.monotonic() < deadline:
            time.sleep(0.02)
        p.close(100)
    assert calls


def test_flush_or_close_from_the_log_callback_is_refused(own_redis: Any) -> None:
    url = own_redis.url
    own_redis.close()
    seen: List[str] = []
    holder: List[Publisher] = []

    def log(level: int, msg: str, repeats: int) -> None:
        for call in (lambda: holder[0].flush(1000), lambda: holder[0].close(1000)):
            try:
                call()
                seen.append("returned")
            except mae.InvalidArgument as e:
                seen.append(str(e))

    with Publisher(url, log=log, backoff_min_ms=10) as p:
        holder.append(p)
        p.publish("x.y", 1, {}, "cli")
        deadline = time.monotonic() + 10
        while len(seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not p.closed
    assert len(seen) >= 2 and all("from a log callback" in s for s in seen), seen
