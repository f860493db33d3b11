"""A redis-sentinel:// URL (issue 21) passes through the package to the
library as it is: a publisher opens on it without connecting, its
wait query is accepted, and a malformed one is refused with the
library's reason."""
from __future__ import annotations

import pytest

from mailagent_events import Publisher
from mailagent_events.errors import InvalidArgument


def test_sentinel_url_opens_and_counts() -> None:
    url = ("redis-sentinel://:pw@127.0.0.1:1,127.0.0.1:2/0"
           "?wait_replicas=1&wait_timeout_ms=100#mymaster")
    with Publisher(url, stream_key="t:events", connect_timeout_ms=50) as p:
        p.publish("test.event", 1, {"n": 1}, "pytest")
        st = p.stats()
        assert st["calls"] == 1
        assert st["lost_failover"] == 0


@pytest.mark.parametrize("url, reason", [
    ("redis-sentinel://127.0.0.1:26379", "master's name"),
    ("redis-sentinel://h,,g#m", "empty Sentinel address"),
    ("redis://h?wait_replicas=x", "wait_replicas"),
])
def test_malformed_sentinel_url_is_refused(url: str, reason: str) -> None:
    with pytest.raises(InvalidArgument, match=reason):
        Publisher(url)
