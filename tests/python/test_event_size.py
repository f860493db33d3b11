"""Through Python, against a real redis-server: an event over the library's
max_event_bytes (1 MiB by default) is counted in dropped_too_large and never
reaches a subscriber, the next small event does; internal_id -2**63 is
MAE_NO_ID and arrives as null (docs/publisher.md "Event size",
docs/events.md internal_id)."""

from __future__ import annotations

import json
from typing import Any

from mailagent_events import Publisher


def test_a_2_mb_event_is_counted_not_sent(publisher: Publisher, subscriber: Any) -> None:
    publisher.publish("test.huge", 1, {"s": "h" * (2 << 20)}, "cli")
    publisher.publish("test.small", 2, {"n": 2}, "cli")
    assert publisher.flush(5000)
    (line,) = subscriber.take(1)
    assert json.loads(line)["event_type"] == "test.small"
    assert subscriber.quiet() == []
    st = publisher.stats()
    assert st["dropped_too_large"] == 1 and st["published"] == 1
    assert st["calls"] == (st["enqueued"] + st["dropped_queue_full"] + st["dropped_disabled"]
                           + st["dropped_invalid"] + st["dropped_too_large"])


def test_internal_id_int64_min_is_null(publisher: Publisher, subscriber: Any) -> None:
    publisher.publish("test.min", -(2**63), None, "cli")
    publisher.publish("test.min_plus_one", -(2**63) + 1, None, "cli")
    assert publisher.flush(5000)
    first, second = (json.loads(x) for x in subscriber.take(2))
    assert first["internal_id"] is None
    assert second["internal_id"] == -(2**63) + 1
