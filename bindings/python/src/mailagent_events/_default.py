"""The drop-in safe_publish: one process-wide Publisher configured from the
environment, opened on first use and closed at exit."""

from __future__ import annotations

import atexit
import logging
import os
import threading
from typing import Any, Mapping, Optional

from ._util import OPEN_DBS, OPEN_PUBLISHERS
from .errors import MailagentError
from .publisher import Publisher, has_stream_mode

__all__ = ["safe_publish", "default_publisher"]

_log = logging.getLogger("mailagent_events")

_lock = threading.Lock()
_publisher: Optional[Publisher] = None
_shut = False
# Publishers of parent processes, kept alive in a forked child so that
# nothing frees them there (their memory is the parent's copy).
_orphans: list = []


def _from_env() -> Publisher:
    url = os.environ.get("MAILAGENT_REDIS_URL") or None
    kw: dict = {"channel": os.environ.get("MAILAGENT_CHANNEL") or None}
    stream = os.environ.get("MAILAGENT_STREAM") or None
    if stream is not None:
        if has_stream_mode():
            kw["stream_key"] = stream
        else:
            _log.warning("mailagent_events: MAILAGENT_STREAM is set but this "
                         "libmailagent-events has no stream mode; publishing without it")
    try:
        return Publisher(url, close_timeout_ms=1000, **kw)
    except MailagentError as e:
        # The drop-in must not take the watcher down for a bad variable:
        # say why once, and publish nothing (calls count as dropped_disabled).
        _log.error("mailagent_events: cannot publish: MAILAGENT_REDIS_URL/MAILAGENT_CHANNEL: %s",
                   e.message)
        return Publisher(None, close_timeout_ms=1000)


def default_publisher() -> Publisher:
    """The process-wide Publisher safe_publish uses, opened on first use
    from MAILAGENT_REDIS_URL (unset: a disabled publisher that only
    counts), MAILAGENT_CHANNEL and MAILAGENT_STREAM, and closed at exit
    (waiting at most 1 s for queued events). A child process after fork()
    gets its own on its first call, as redis-py's connection pools do.
    Pass it to Db(publisher=...) to announce store writes through it."""
    global _publisher
    p = _publisher
    if p is not None:
        return p
    with _lock:
        if _publisher is None:
            _publisher = _from_env()
        return _publisher


def safe_publish(
    event_type: str,
    internal_id: Optional[int],
    data: Optional[Mapping[str, Any]],
    source: str,
) -> None:
    """Publishes one event through the process-wide publisher: the seed's
    ``safe_publish(event_type, internal_id, data, source)``, now queued in
    microseconds whatever Redis does.

    Never raises and never blocks, like the function it replaces: bad
    arguments (wrong types, data json cannot serialise) are counted as
    dropped_invalid in default_publisher().stats(), and calls after the
    interpreter began to exit are ignored."""
    p = _publisher
    if p is None:
        if _shut:
            return
        try:
            p = default_publisher()
        except Exception:  # nothing about publishing may reach the caller
            return
    try:
        p.publish(event_type, internal_id, data, source)
    except (TypeError, ValueError):
        try:
            p._count_invalid()
        except MailagentError:
            pass
    except MailagentError:  # closed at exit under a late daemon thread
        pass


# Every Db and Publisher is closed at exit, Dbs first (they borrow their
# publisher), so no library thread calls back into a finalising interpreter.


@atexit.register
def _close_all() -> None:
    global _shut
    _shut = True
    for db in list(OPEN_DBS):
        try:
            db.close()
        except Exception:
            pass
    for p in list(OPEN_PUBLISHERS) + ([_publisher] if _publisher is not None else []):
        if p._handle is not None and p._handle.forked:
            continue  # a parent's publisher in a child: left alone
        try:
            p.close()
        except Exception:
            pass


def _after_fork_in_child() -> None:
    global _lock, _publisher
    _lock = threading.Lock()
    if _publisher is not None:
        _orphans.append(_publisher)
        _publisher = None


os.register_at_fork(after_in_child=_after_fork_in_child)
