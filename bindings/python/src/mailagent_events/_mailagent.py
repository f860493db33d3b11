"""MailAgent's publisher module (src/events/publisher.py), the same names,
call forms and defaults, over libmailagent-events: a MailAgent process
switches with one line, ``from mailagent_events import *`` in place of that
module's body.

What differs is written in docs/publisher.md#mailagent-drop-in: mainly that
publish() queues (microseconds, whatever Redis does) where MailAgent's
writes to Redis on the caller's thread, so True means "accepted for
sending", not "written".
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from typing import Any, Dict, Optional

from . import _default
from ._env import compose_url, redis_url_from_env
from .errors import MailagentError
from .publisher import Publisher

__all__ = [
    "DEFAULT_CHANNEL",
    "EventPublisher",
    "get_publisher",
    "reset_publisher_for_tests",
    "safe_publish",
    "_build_payload",
]

_log = logging.getLogger("mailagent_events")

#: The Redis channel of the events (docs/events.md).
DEFAULT_CHANNEL = "mailagent:events:v1"


def _build_payload(
    event_type: str,
    *,
    internal_id: Optional[int],
    data: Optional[Dict[str, Any]],
    source: str,
) -> Dict[str, Any]:
    """The event as a dict, as MailAgent builds it (for code that hands it
    on itself, e.g. to POST /api/events/publish)."""
    return {
        "event_type": event_type,
        "ts": time.time(),
        "internal_id": internal_id,
        "data": data or {},
        "source": source,
    }


# The library's JSON grammar (core/text.h): at most 64 levels, no \u0000.
_MAX_DEPTH = 64
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]")
_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def _outside_grammar(body: str) -> bool:
    """True when json.dumps' text is outside the library's JSON grammar, so
    that the library would count it dropped_invalid: known here, so that
    publish() can say False. Cheap unless the text could be that deep."""
    if "\\u0000" in body and _NUL.search(body):
        return True
    if body.count("{") + body.count("[") > _MAX_DEPTH:
        depth = 0
        for c in _NOT_BRACKET.sub("", _STRING.sub("", body)):
            depth += 1 if c in "[{" else -1
            if depth > _MAX_DEPTH:
                return True
    return False


class _LibraryClient:
    """What EventPublisher._client is here: a library Publisher. Any other
    object put in _client (a redis-py client, a test's mock) is used as
    MailAgent uses its redis client: _client.publish(channel, json_text)."""

    __slots__ = ("publisher", "enabled", "owned")

    def __init__(self, publisher: Publisher, *, enabled: bool, owned: bool) -> None:
        self.publisher = publisher
        self.enabled = enabled
        self.owned = owned

    def send(self, event_type: Any, internal_id: Any, data: Any, source: Any) -> bool:
        p = self.publisher
        try:
            # MailAgent's serialisation: json.dumps(..., ensure_ascii=False,
            # default=str); NaN/infinity are not JSON and are refused.
            body = json.dumps(data or {}, ensure_ascii=False, default=str, allow_nan=False)
            if _outside_grammar(body):
                return _count_invalid(p)
            p.publish(event_type, internal_id, body, source)
        except MailagentError as e:
            if e.__class__.__name__ == "Closed":
                return False
            return _count_invalid(p)
        except Exception:  # TypeError, ValueError, RecursionError, a raising __str__ ...
            return _count_invalid(p)
        # What the library counts instead of sending (dropped_invalid,
        # dropped_disabled), known here without asking it.
        return bool(self.enabled and body[:1] == "{" and event_type and source)

    def close(self) -> None:
        if self.owned:
            self.publisher.close()
        else:
            _default._forget(self.publisher)


def _count_invalid(p: Publisher) -> bool:
    try:
        p._count_invalid()
    except Exception:
        pass
    return False


class EventPublisher:
    """MailAgent's EventPublisher: publish() never raises and returns True
    when the event was accepted for sending (queued; a background thread
    sends it), False when there is no Redis URL, the event cannot be sent
    at all (counted dropped_invalid) or the publisher is closed.

    redis_url and redis_db are composed as MailAgent does,
    f"{redis_url}/{redis_db}" (docs/operations.md#environment says how a
    trailing '/' or "/0" is read); socket_timeout (seconds) bounds connecting
    and each Redis reply. The library publisher is opened on first publish;
    close() sends what is queued (at most socket_timeout) and closes it."""

    def __init__(
        self,
        *,
        redis_url: str,
        redis_db: int = 2,
        channel: str = DEFAULT_CHANNEL,
        socket_timeout: float = 2.0,
    ) -> None:
        self.redis_url = redis_url
        self.redis_db = redis_db
        self.channel = channel
        self.socket_timeout = socket_timeout
        self._client: Any = None  # lazy
        self._lock = threading.Lock()
        self._warned = False
        # get_publisher()'s instance: its client is default_publisher(),
        # configured from the environment (None: an instance of the caller's).
        self._env_enabled: Optional[bool] = None

    def _client_or_none(self) -> Any:
        client = self._client
        if client is not None:
            return client
        if self._env_enabled is False:
            # No Redis URL: MailAgent's get_publisher().publish() publishes
            # nothing and says False; only safe_publish reaches the hub.
            return None
        if self._env_enabled is not None:  # reopened after close()
            with self._lock:
                if self._client is None:
                    self._client = _LibraryClient(_default.default_publisher(),
                                                  enabled=self._env_enabled, owned=False)
                return self._client
        if not self.redis_url:
            return None
        with self._lock:
            if self._client is None:
                try:
                    ms = max(1, min(int(float(self.socket_timeout) * 1000), 2**31 - 1))
                    pub = Publisher(
                        compose_url(self.redis_url, self.redis_db),
                        channel=self.channel,
                        connect_timeout_ms=ms,
                        io_timeout_ms=ms,
                        close_timeout_ms=ms,
                    )
                except Exception as e:
                    if not self._warned:
                        self._warned = True
                        _log.warning("mailagent_events: [publisher] init failed (will retry): %s", e)
                    return None
                self._client = _LibraryClient(pub, enabled=True, owned=True)
            return self._client

    def publish(
        self,
        event_type: str,
        *,
        internal_id: Optional[int] = None,
        data: Optional[Dict[str, Any]] = None,
        source: str = "mailagent",
    ) -> bool:
        """Publishes to the channel (mailagent:events:v1 by default).
        Returns True when accepted for sending, False otherwise; never raises."""
        try:
            client = self._client_or_none()
            if client is None:
                return False
            if type(client) is _LibraryClient:
                return client.send(event_type, internal_id, data, source)
            payload = _build_payload(event_type, internal_id=internal_id, data=data,
                                     source=source)
            client.publish(self.channel, json.dumps(payload, ensure_ascii=False, default=str))
            return True
        except Exception as e:
            try:
                _log.debug("mailagent_events: [publisher] publish failed (event_type=%r): %s",
                           event_type, e)
            except Exception:
                pass
            return False

    def close(self) -> None:
        client = self._client
        if client is not None:
            try:
                client.close()
            except Exception:
                pass
            self._client = None


# ---- the process-wide publisher ---------------------------------------------

_lock = threading.Lock()
_singleton: Optional[EventPublisher] = None
_orphans: list = []


def _from_env() -> EventPublisher:
    try:
        url, var = redis_url_from_env()
    except ValueError:  # default_publisher() logs it, once
        url, var = None, None
    if var == "REDIS_URL":
        raw = (os.environ.get("REDIS_DB") or "").strip()
        ep = EventPublisher(redis_url=os.environ["REDIS_URL"].strip(),
                            redis_db=int(raw.lstrip("+")) if raw else 2)
    else:
        ep = EventPublisher(redis_url=url or "", redis_db=2)
    # Its client is the process-wide library publisher (default_publisher()),
    # configured from the same environment, so that safe_publish,
    # get_publisher() and default_publisher() count in one place.
    ep._env_enabled = url is not None
    ep._client_or_none()
    return ep


def _hub_client() -> Optional[_LibraryClient]:
    """safe_publish's way with no Redis URL: default_publisher(), posting
    to the hub (None when that could not be configured: then nothing is
    published, as with no URL at all)."""
    p = _default.default_publisher()
    return _LibraryClient(p, enabled=p._via_hub, owned=False)


def get_publisher() -> EventPublisher:
    """The process-wide EventPublisher, configured from the environment
    (MAILAGENT_REDIS_URL, else MailAgent's REDIS_URL + REDIS_DB, and
    MAILAGENT_CHANNEL / MAILAGENT_STREAM: docs/operations.md#environment).
    Its events go through default_publisher()."""
    global _singleton
    p = _singleton
    if p is not None:
        return p
    with _lock:
        if _singleton is None:
            _singleton = _from_env()
        return _singleton


def reset_publisher_for_tests() -> None:
    """Closes the process-wide publisher (sending what is queued, at most
    1 s) and forgets it: the next call reads the environment again."""
    global _singleton
    with _lock:
        p, _singleton = _singleton, None
    if p is not None:
        p.close()
    _default._forget(None)


def safe_publish(
    event_type: str,
    internal_id: Optional[int] = None,
    data: Optional[Dict[str, Any]] = None,
    source: str = "mailagent",
) -> None:
    """MailAgent's safe_publish: get_publisher().publish(...), and nothing
    ever raises. Call it as MailAgent does, safe_publish("email.new"),
    safe_publish("outbox.failed", internal_id=7, data={...}, source="outbox"),
    or with the arguments in that order by position.

    With no Redis URL it posts to a relay running as the hub:
    MAILAGENT_RELAY_URL, else http://127.0.0.1:${SSE_LOCAL_PORT:-9200} as
    MailAgent's loopback (dropped and counted while nothing listens there);
    get_publisher().publish() then returns False as MailAgent's does.

    Queues in microseconds whatever Redis does. What cannot be sent at all
    (an empty or non-str event_type or source, an internal_id that is not an
    int, data that is not a dict or that json.dumps(..., default=str)
    cannot encode: nested too deep, a raising __str__) is counted as
    dropped_invalid in default_publisher().stats(); calls after the
    interpreter began to exit are ignored."""
    if _default._shut:
        return
    try:
        ep = get_publisher()
        if ep._env_enabled is False:
            client = _hub_client()
            if client is not None:
                client.send(event_type, internal_id, data, source)
            return
        ep.publish(event_type, internal_id=internal_id, data=data, source=source)
    except Exception:
        pass


def _after_fork_in_child() -> None:
    global _lock, _singleton
    _lock = threading.Lock()
    if _singleton is not None:
        _orphans.append(_singleton)  # the parent's: nothing frees it here
        _singleton = None


os.register_at_fork(after_in_child=_after_fork_in_child)
