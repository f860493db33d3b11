"""The drop-in with no Redis (issue 20): safe_publish posts to a relay
running as the hub, MAILAGENT_RELAY_URL else
http://127.0.0.1:${SSE_LOCAL_PORT:-9200} as MailAgent's loopback; dropped
and counted while nothing listens, never blocking nor raising.
Publisher(relay_url=..., relay_token=...) likewise; Publisher() with
neither URL stays disabled; get_publisher().publish() without Redis says
False and sends nothing, as MailAgent's does."""

from __future__ import annotations

import json
import time
from typing import Any, Iterator

import pytest

from conftest import FakeHub, free_port
from mailagent_events import (Publisher, default_publisher, get_publisher,
                              reset_publisher_for_tests, safe_publish)

ENV_VARS = ("MAILAGENT_REDIS_URL", "REDIS_URL", "REDIS_DB", "MAILAGENT_CHANNEL",
            "MAILAGENT_STREAM", "MAILAGENT_RELAY_URL", "MAILAGENT_LOCAL_API_TOKEN")


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for v in ENV_VARS:
        monkeypatch.delenv(v, raising=False)
    reset_publisher_for_tests()
    try:
        yield monkeypatch
    finally:
        reset_publisher_for_tests()


def check(ev: dict, event_type: str, internal_id: Any, data: Any, source: str) -> None:
    assert list(ev) == ["event_type", "ts", "internal_id", "data", "source"]
    assert ev["event_type"] == event_type and ev["internal_id"] == internal_id
    assert ev["data"] == (data or {}) and ev["source"] == source
    assert abs(ev["ts"] - time.time()) < 60


def every_call_form() -> None:
    safe_publish("email.new")                                           # defaults
    safe_publish("outbox.failed", data={"outbox_id": 17, "last_error": "é"},
                 source="outbox")                                       # no internal_id
    safe_publish("email.synced", internal_id=53675, data=None)          # data=None
    safe_publish("llm.success", internal_id=1, data={"model": "m"}, source="llm_agent")
    safe_publish("email.flag_changed", 2, {"flag": True}, "cli")        # by position


def check_every_call_form(got: list) -> None:
    assert len(got) == 5
    check(got[0], "email.new", None, None, "mailagent")
    check(got[1], "outbox.failed", None, {"outbox_id": 17, "last_error": "é"}, "outbox")
    check(got[2], "email.synced", 53675, None, "mailagent")
    check(got[3], "llm.success", 1, {"model": "m"}, "llm_agent")
    check(got[4], "email.flag_changed", 2, {"flag": True}, "cli")


def test_every_call_form_arrives_once_at_the_relay_url(env: pytest.MonkeyPatch,
                                                       fake_hub: FakeHub) -> None:
    env.setenv("MAILAGENT_RELAY_URL", fake_hub.url)
    every_call_form()
    # MailAgent's get_publisher().publish() without Redis: False, nothing sent.
    assert get_publisher().publish("job.done", internal_id=3) is False
    assert default_publisher().flush(5000)
    check_every_call_form(fake_hub.wait(5))
    time.sleep(0.2)
    assert len(fake_hub.events) == 5
    st = default_publisher().stats()
    assert st["calls"] == 5 and st["published"] == 5 and st["dropped_send_error"] == 0


def test_the_local_port_is_the_default(env: pytest.MonkeyPatch, fake_hub: FakeHub) -> None:
    """Nothing set but SSE_LOCAL_PORT: http://127.0.0.1:$SSE_LOCAL_PORT."""
    env.setenv("SSE_LOCAL_PORT", str(fake_hub.port))
    every_call_form()
    assert default_publisher().flush(5000)
    check_every_call_form(fake_hub.wait(5))


def test_the_token_is_sent(env: pytest.MonkeyPatch) -> None:
    hub = FakeHub(token="s3cret")
    try:
        env.setenv("MAILAGENT_RELAY_URL", hub.url)
        env.setenv("MAILAGENT_LOCAL_API_TOKEN", "s3cret")
        safe_publish("email.new", 1)
        assert default_publisher().flush(5000)
        assert [e["internal_id"] for e in hub.wait(1)] == [1]
        assert hub.refused == 0
    finally:
        hub.close()


def test_a_wrong_token_is_counted_not_raised(env: pytest.MonkeyPatch) -> None:
    hub = FakeHub(token="s3cret")
    try:
        env.setenv("MAILAGENT_RELAY_URL", hub.url)
        env.setenv("MAILAGENT_LOCAL_API_TOKEN", "wrong")
        safe_publish("email.new", 1)
        assert default_publisher().flush(5000)
        st = default_publisher().stats()
        assert hub.events == [] and hub.refused >= 1
        assert st["dropped_send_error"] == 1
        if "rejected_auth" in st:
            assert st["rejected_auth"] == 1
    finally:
        hub.close()


def test_nothing_listening_drops_and_counts_at_once(env: pytest.MonkeyPatch) -> None:
    env.setenv("SSE_LOCAL_PORT", str(free_port()))  # closed
    for i in range(100):
        safe_publish("email.new", i)
    # Every call was taken (queued, nothing raised); none could be sent.
    # That the calls never wait is measured in bench/ (part 9, 'hubcall').
    default_publisher().flush(5000)
    st = default_publisher().stats()
    assert st["calls"] == 100
    assert st["enqueued"] + st["dropped_queue_full"] == 100
    assert st["published"] == 0 and st["connect_failures"] >= 1


def test_a_bad_local_port_publishes_nothing_and_never_raises(env: pytest.MonkeyPatch,
                                                              caplog: Any) -> None:
    env.setenv("SSE_LOCAL_PORT", "nine")
    safe_publish("email.new")
    assert default_publisher().stats()["dropped_disabled"] == 1
    assert "SSE_LOCAL_PORT must be a port" in caplog.text


def test_redis_wins_over_the_relay(env: pytest.MonkeyPatch, fake_hub: FakeHub,
                                   redis_server: Any, channel: str) -> None:
    from conftest import Subscriber
    env.setenv("MAILAGENT_REDIS_URL", redis_server.url)
    env.setenv("MAILAGENT_RELAY_URL", fake_hub.url)
    env.setenv("MAILAGENT_CHANNEL", channel)
    sub = Subscriber(redis_server, channel)
    try:
        safe_publish("email.new", 5)
        assert default_publisher().flush(5000)
        assert json.loads(sub.take(1)[0])["internal_id"] == 5
        assert fake_hub.events == []
    finally:
        sub.close()


def test_publisher_relay_keywords(fake_hub: FakeHub) -> None:
    with Publisher(relay_url=fake_hub.url, relay_token="t") as p:
        p.publish("email.new", 9, {"a": 1}, "cli")
        assert p.flush(5000)
        ev = fake_hub.wait(1)[0]
        check(ev, "email.new", 9, {"a": 1}, "cli")
        assert p.stats()["published"] == 1


def test_publisher_without_urls_stays_disabled(fake_hub: FakeHub,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILAGENT_RELAY_URL", fake_hub.url)  # only the default publisher reads it
    monkeypatch.setenv("SSE_LOCAL_PORT", str(fake_hub.port))
    with Publisher() as p:
        p.publish("email.new", 1, None, "cli")
        st = p.stats()
        assert st["dropped_disabled"] == 1 and st["enqueued"] == 0
    assert fake_hub.events == []


def test_both_urls_is_an_error(fake_hub: FakeHub) -> None:
    from mailagent_events import InvalidArgument
    with pytest.raises(InvalidArgument, match="both"):
        Publisher("redis://127.0.0.1:1", relay_url=fake_hub.url)
