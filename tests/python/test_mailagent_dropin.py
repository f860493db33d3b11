"""MailAgent's publisher module, replaced by `from mailagent_events import *`:
its call forms, its serialisation (json.dumps(..., ensure_ascii=False,
default=str)), its "never raises", its configuration (REDIS_URL + REDIS_DB),
each checked on the bytes a real subscriber receives from a real
redis-server."""

from __future__ import annotations

import datetime as dt
import json
import math
import time
import uuid
from decimal import Decimal
from typing import Any, Dict, Iterator, List
from unittest.mock import MagicMock

import pytest
import redis

import mailagent_events as mae
from conftest import RedisServer, Subscriber
from mailagent_events import (
    DEFAULT_CHANNEL,
    EventPublisher,
    default_publisher,
    get_publisher,
    reset_publisher_for_tests,
    safe_publish,
)

ENV_VARS = ("MAILAGENT_REDIS_URL", "REDIS_URL", "REDIS_DB", "MAILAGENT_CHANNEL",
            "MAILAGENT_STREAM")


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """A clean environment for the process-wide publisher, reset around."""
    for v in ENV_VARS:
        monkeypatch.delenv(v, raising=False)
    reset_publisher_for_tests()
    try:
        yield monkeypatch
    finally:
        reset_publisher_for_tests()


def mailagent_data(data: Any) -> str:
    """The data object exactly as MailAgent's json.dumps writes it, compact."""
    return json.dumps(data or {}, ensure_ascii=False, default=str, separators=(",", ":"))


def check_envelope(raw: bytes, event_type: str, internal_id: Any, data: Any, source: str) -> None:
    """raw is the envelope of docs/events.md, in its order, with data's
    bytes as MailAgent's serialisation gives them."""
    evt = json.loads(raw)
    assert list(evt) == ["event_type", "ts", "internal_id", "data", "source"]
    assert evt["event_type"] == event_type
    assert evt["internal_id"] == internal_id
    assert evt["source"] == source
    assert isinstance(evt["ts"], float) and abs(evt["ts"] - time.time()) < 60
    d = mailagent_data(data).encode()
    assert b',"data":' + d + b',"source":' in raw, raw


def flush() -> None:
    assert default_publisher().flush(5000)


# ---- call forms -----------------------------------------------------------------


def test_every_mailagent_call_form(env: pytest.MonkeyPatch, redis_server: RedisServer,
                                   channel: str) -> None:
    env.setenv("MAILAGENT_REDIS_URL", redis_server.url)
    env.setenv("MAILAGENT_CHANNEL", channel)
    sub = Subscriber(redis_server, channel)
    try:
        safe_publish("email.new")                                           # defaults
        safe_publish("outbox.failed", data={"outbox_id": 17, "last_error": "é"},
                     source="outbox")                                       # no internal_id
        safe_publish("email.synced", internal_id=53675, data=None)          # data=None
        safe_publish("llm.success", internal_id=1, data={"model": "m"}, source="llm_agent")
        safe_publish("email.flag_changed", 2, {"flag": True}, "cli")        # by position
        assert get_publisher().publish("job.done", internal_id=3) is True
        assert get_publisher().publish("folder.changed", data={}) is True
        flush()
        raw = sub.take(7)
        assert len(raw) == 7
        check_envelope(raw[0], "email.new", None, None, "mailagent")
        check_envelope(raw[1], "outbox.failed", None, {"outbox_id": 17, "last_error": "é"},
                       "outbox")
        check_envelope(raw[2], "email.synced", 53675, None, "mailagent")
        check_envelope(raw[3], "llm.success", 1, {"model": "m"}, "llm_agent")
        check_envelope(raw[4], "email.flag_changed", 2, {"flag": True}, "cli")
        check_envelope(raw[5], "job.done", 3, None, "mailagent")
        check_envelope(raw[6], "folder.changed", None, None, "mailagent")
    finally:
        sub.close()


def test_data_or_empty_as_mailagent(env: pytest.MonkeyPatch, redis_server: RedisServer,
                                    channel: str) -> None:
    """MailAgent sends `data or {}`: an empty list or string is {}."""
    env.setenv("MAILAGENT_REDIS_URL", redis_server.url)
    env.setenv("MAILAGENT_CHANNEL", channel)
    sub = Subscriber(redis_server, channel)
    try:
        safe_publish("a", data=[])
        safe_publish("b", data="")
        flush()
        raw = sub.take(2)
        check_envelope(raw[0], "a", None, {}, "mailagent")
        check_envelope(raw[1], "b", None, {}, "mailagent")
    finally:
        sub.close()


# ---- what json cannot encode ----------------------------------------------------


def test_values_json_cannot_encode_go_out_as_their_str(
        env: pytest.MonkeyPatch, redis_server: RedisServer, channel: str) -> None:
    env.setenv("MAILAGENT_REDIS_URL", redis_server.url)
    env.setenv("MAILAGENT_CHANNEL", channel)
    data = {
        "datetime": dt.datetime(2026, 5, 19, 8, 30, 15, 123456, tzinfo=dt.timezone.utc),
        "date": dt.date(2026, 5, 19),
        "decimal": Decimal("1.10"),
        "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "set": {"only"},
        "bytes": b"\xff\x00ab",
        "nested": {"when": dt.datetime(2026, 1, 1), "ok": [1, "二"]},
    }
    sub = Subscriber(redis_server, channel)
    try:
        safe_publish("email.new", internal_id=7, data=data)
        assert EventPublisher(redis_url=redis_server.url, channel=channel).publish(
            "email.new", internal_id=8, data=data) is True
        flush()
        raw = sub.take(2)
        assert len(raw) == 2
        check_envelope(raw[0], "email.new", 7, data, "mailagent")
        got = json.loads(raw[0])["data"]
        assert got["datetime"] == "2026-05-19 08:30:15.123456+00:00"
        assert got["decimal"] == "1.10" and got["set"] == "{'only'}"
        assert got["bytes"] == "b'\\xff\\x00ab'"
        assert got["uuid"] == "12345678-1234-5678-1234-567812345678"
        check_envelope(raw[1], "email.new", 8, data, "mailagent")
    finally:
        sub.close()


class Hostile:
    def __str__(self) -> str:
        raise RuntimeError("__str__ refuses")

    __repr__ = __str__


def deep(n: int) -> Dict[str, Any]:
    d: Dict[str, Any] = {}
    for _ in range(n):
        d = {"k": d}
    return d


@pytest.mark.parametrize("bad", [
    pytest.param({"x": Hostile()}, id="hostile-str"),
    pytest.param(deep(1000), id="nested-1000"),
    pytest.param(deep(100000), id="nested-100000"),
    pytest.param({"nan": math.nan}, id="nan"),
    pytest.param([1, 2], id="list"),
])
def test_what_cannot_be_sent_never_raises_and_is_counted(
        env: pytest.MonkeyPatch, redis_server: RedisServer, channel: str, bad: Any) -> None:
    env.setenv("MAILAGENT_REDIS_URL", redis_server.url)
    env.setenv("MAILAGENT_CHANNEL", channel)
    sub = Subscriber(redis_server, channel)
    try:
        before = default_publisher().stats()["dropped_invalid"]
        assert safe_publish("email.new", internal_id=1, data=bad) is None
        assert get_publisher().publish("email.new", internal_id=2, data=bad) is False
        ep = EventPublisher(redis_url=redis_server.url, channel=channel)
        assert ep.publish("email.new", internal_id=3, data=bad) is False
        assert ep._client.publisher.stats()["dropped_invalid"] == 1
        ep.close()
        assert default_publisher().stats()["dropped_invalid"] == before + 2
        safe_publish("after.bad", internal_id=4)  # the publisher still works
        flush()
        raw = sub.take(1)
        assert len(raw) == 1 and json.loads(raw[0])["event_type"] == "after.bad"
        assert sub.quiet() == []
    finally:
        sub.close()


def test_arguments_mailagent_would_send_but_we_cannot(env: pytest.MonkeyPatch,
                                                      redis_server: RedisServer) -> None:
    """Counted dropped_invalid, False, never raised (docs/publisher.md lists them)."""
    env.setenv("MAILAGENT_REDIS_URL", redis_server.url)
    p = get_publisher()
    before = default_publisher().stats()["dropped_invalid"]
    assert p.publish(None) is False                          # type: ignore[arg-type]
    assert p.publish("") is False
    assert p.publish("a", internal_id="7") is False          # type: ignore[arg-type]
    assert p.publish("a", internal_id=True) is False
    assert p.publish("a", source="") is False
    assert p.publish("a", source=None) is False              # type: ignore[arg-type]
    assert p.publish("a", data="text") is False
    assert default_publisher().stats()["dropped_invalid"] == before + 7


def test_package_publisher_still_raises(publisher: Any) -> None:
    with pytest.raises(TypeError):
        publisher.publish("x", 1, {"x": object()}, "s")
    with pytest.raises(TypeError):
        publisher.publish("x", 1, {"x": Hostile()}, "s")
    with pytest.raises(RecursionError):
        publisher.publish("x", 1, deep(100000), "s")


# ---- configuration ----------------------------------------------------------------


def test_redis_url_and_redis_db_only(env: pytest.MonkeyPatch, redis_server: RedisServer,
                                     channel: str) -> None:
    """MailAgent's own variables: REDIS_URL + REDIS_DB. The database is
    proved with a stream (pub/sub ignores databases)."""
    if not mae.has_stream_mode():
        pytest.skip("this library has no stream mode")
    key = f"{channel}:stream"
    env.setenv("REDIS_URL", redis_server.url + "/")  # MailAgent's trailing slash
    env.setenv("REDIS_DB", "5")
    env.setenv("MAILAGENT_CHANNEL", channel)
    env.setenv("MAILAGENT_STREAM", key)
    sub = Subscriber(redis_server, channel)
    try:
        p = get_publisher()
        assert p.redis_url == redis_server.url + "/" and p.redis_db == 5
        safe_publish("email.new", internal_id=9)
        flush()
        db5 = redis.Redis(host="127.0.0.1", port=redis_server.port, db=5)
        db0 = redis.Redis(host="127.0.0.1", port=redis_server.port, db=0)
        entries = db5.xrange(key)
        assert len(entries) == 1 and db0.xlen(key) == 0
        check_envelope(entries[0][1][b"event"], "email.new", 9, None, "mailagent")
        db5.close()
        db0.close()
    finally:
        sub.close()


def test_redis_url_default_db_is_2(env: pytest.MonkeyPatch, redis_server: RedisServer,
                                   channel: str) -> None:
    if not mae.has_stream_mode():
        pytest.skip("this library has no stream mode")
    key = f"{channel}:stream"
    env.setenv("REDIS_URL", redis_server.url)
    env.setenv("REDIS_DB", "  ")  # blank: unset
    env.setenv("MAILAGENT_REDIS_URL", "")  # blank: unset
    env.setenv("MAILAGENT_STREAM", key)
    safe_publish("email.new")
    flush()
    db2 = redis.Redis(host="127.0.0.1", port=redis_server.port, db=2)
    assert db2.xlen(key) == 1
    db2.close()


def test_blank_variables_publish_nothing(env: pytest.MonkeyPatch, redis_server: RedisServer,
                                         channel: str) -> None:
    env.setenv("MAILAGENT_REDIS_URL", " ")
    env.setenv("REDIS_URL", "\t")
    env.setenv("MAILAGENT_CHANNEL", channel)
    sub = Subscriber(redis_server, channel)
    try:
        # Blank counts as unset: no Redis, so safe_publish goes to the local
        # hub (nothing listens on the suite's SSE_LOCAL_PORT: dropped and
        # counted), and get_publisher().publish() says False as MailAgent's.
        safe_publish("email.new")
        assert get_publisher().publish("email.new") is False
        default_publisher().flush(5000)
        st = default_publisher().stats()
        assert st["calls"] == 1 and st["published"] == 0
        assert sub.quiet() == []
    finally:
        sub.close()


def test_mailagent_redis_url_wins(env: pytest.MonkeyPatch, redis_server: RedisServer,
                                  channel: str) -> None:
    env.setenv("MAILAGENT_REDIS_URL", redis_server.url)
    env.setenv("REDIS_URL", "redis://127.0.0.1:1")
    env.setenv("MAILAGENT_CHANNEL", channel)
    sub = Subscriber(redis_server, channel)
    try:
        safe_publish("email.new")
        flush()
        assert len(sub.take(1)) == 1
    finally:
        sub.close()


def test_bad_redis_db_never_raises(env: pytest.MonkeyPatch, caplog: Any) -> None:
    env.setenv("REDIS_URL", "redis://127.0.0.1:1")
    env.setenv("REDIS_DB", "two")
    safe_publish("email.new")
    assert get_publisher().publish("email.new") is False
    assert "REDIS_DB must be a database number" in caplog.text


# ---- EventPublisher, get_publisher, reset_publisher_for_tests ------------------------


def test_event_publisher_as_mailagent(redis_server: RedisServer, channel: str) -> None:
    assert DEFAULT_CHANNEL == "mailagent:events:v1"
    assert EventPublisher(redis_url="", redis_db=2).publish("email.new") is False
    bad = EventPublisher(redis_url="redis://invalid host:9999", redis_db=2)
    assert bad.publish("email.new") is False and bad._client is None
    with pytest.raises(TypeError):
        EventPublisher("redis://x")  # type: ignore[misc]  # keyword-only, as MailAgent's
    sub = Subscriber(redis_server, channel)
    try:
        p = EventPublisher(redis_url=redis_server.url, redis_db=3, channel=channel,
                           socket_timeout=0.5)
        assert (p.redis_url, p.redis_db, p.channel, p.socket_timeout) == (
            redis_server.url, 3, channel, 0.5)
        assert p._client is None  # lazy
        assert p.publish("email.synced", internal_id=53675,
                         data={"notion_page_id": "abc"}, source="new_watcher") is True
        p.close()  # sends what is queued
        assert p._client is None
        raw = sub.take(1)
        check_envelope(raw[0], "email.synced", 53675, {"notion_page_id": "abc"}, "new_watcher")
        p.close()  # again: nothing
        assert p.publish("after.close") is True  # reopened lazily, as MailAgent's client
        p.close()
        assert len(sub.take(1)) == 1
    finally:
        sub.close()


def test_a_client_put_in_place_is_used_as_mailagents_redis_client() -> None:
    """MailAgent's own tests put a mock in _client: it gets publish(channel, json)."""
    p = EventPublisher(redis_url="redis://localhost:6379", redis_db=2, channel="c")
    mock = MagicMock()
    p._client = mock
    when = dt.datetime(2026, 5, 19)
    assert p.publish("email.new", data={"now": when}) is True
    ch, text = mock.publish.call_args.args
    assert ch == "c" and json.loads(text)["data"] == {"now": str(when)}
    mock.publish.side_effect = RuntimeError("network down")
    assert p.publish("email.new") is False
    p.close()
    mock.close.assert_called_once()
    assert p._client is None


def test_singleton_and_reset(env: pytest.MonkeyPatch, redis_server: RedisServer,
                             channel: str) -> None:
    env.setenv("MAILAGENT_REDIS_URL", redis_server.url)
    env.setenv("MAILAGENT_CHANNEL", channel)
    a = get_publisher()
    assert get_publisher() is a
    lib_a = default_publisher()
    sub = Subscriber(redis_server, channel)
    try:
        safe_publish("before.reset")
        reset_publisher_for_tests()  # closes: what was queued is sent
        assert lib_a.closed
        assert [json.loads(r)["event_type"] for r in sub.take(1)] == ["before.reset"]
        env.setenv("MAILAGENT_CHANNEL", channel + ":2")  # read again after a reset
        b = get_publisher()
        assert b is not a and default_publisher() is not lib_a
        sub2 = Subscriber(redis_server, channel + ":2")
        try:
            safe_publish("after.reset")
            flush()
            assert [json.loads(r)["event_type"] for r in sub2.take(1)] == ["after.reset"]
        finally:
            sub2.close()
    finally:
        sub.close()


def test_star_import_gives_mailagents_names() -> None:
    ns: Dict[str, Any] = {}
    exec("from mailagent_events import *", ns)
    for name in ("safe_publish", "DEFAULT_CHANNEL", "EventPublisher", "get_publisher",
                 "reset_publisher_for_tests", "_build_payload"):
        assert name in ns, name
    payload = ns["_build_payload"]("email.new", internal_id=None, data=None, source="x")
    assert list(payload) == ["event_type", "ts", "internal_id", "data", "source"]
    assert payload["data"] == {}
    # the package's own names are still there
    for name in ("Publisher", "Db", "default_publisher", "MailagentError"):
        assert name in ns, name


def test_positional_list_of_names_unchanged() -> None:
    missing: List[str] = [n for n in mae.__all__ if not hasattr(mae, n)]
    assert missing == []


def test_the_library_grammar_is_judged_before_publish_answers(
        redis_server: RedisServer, channel: str) -> None:
    """publish() says False for exactly what the library would drop:
    deeper than 64 levels, a NUL character; brackets and backslashes inside
    strings are text, not structure."""
    sub = Subscriber(redis_server, channel)
    p = EventPublisher(redis_url=redis_server.url, channel=channel)
    try:
        ok = {
            "depth-64": deep(63),                     # the data object is level 1
            "brackets-in-text": {"s": "[{" * 100},
            "backslash-u0000-text": {"s": "\\u0000"},  # a backslash, then 'u0000'
            "many-shallow": {"rows": [{"i": i} for i in range(200)]},
        }
        bad = {"depth-65": deep(64), "nul": {"s": "a\x00b"}, "nul-key": {"\x00": 1}}
        for name, data in ok.items():
            assert p.publish(name, data=data) is True, name
        for name, data in bad.items():
            assert p.publish(name, data=data) is False, name
        p._client.publisher.flush(5000)
        st = p._client.publisher.stats()
        assert st["dropped_invalid"] == len(bad) and st["published"] == len(ok)
        got = [json.loads(r) for r in sub.take(len(ok))]
        assert [e["event_type"] for e in got] == list(ok)
        for e in got:
            assert e["data"] == json.loads(mailagent_data(ok[e["event_type"]]))
        assert sub.quiet() == []
    finally:
        p.close()
        sub.close()


def test_process_wide_publisher_reopens_after_close(env: pytest.MonkeyPatch,
                                                    redis_server: RedisServer,
                                                    channel: str) -> None:
    """get_publisher().close() then publish: reopened from the environment
    (its channel, a URL naming a database), as MailAgent's lazy client is."""
    env.setenv("MAILAGENT_REDIS_URL", redis_server.url + "/3")
    env.setenv("MAILAGENT_CHANNEL", channel)
    sub = Subscriber(redis_server, channel)
    try:
        p = get_publisher()
        p.close()
        assert p._client is None
        assert p.publish("after.close", internal_id=1) is True
        safe_publish("after.close.2")
        flush()
        assert [json.loads(r)["event_type"] for r in sub.take(2)] == ["after.close",
                                                                       "after.close.2"]
    finally:
        sub.close()
