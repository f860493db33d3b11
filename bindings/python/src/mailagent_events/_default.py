"""The process-wide library Publisher behind the drop-in (safe_publish and
get_publisher() of _mailagent.py): configured from the environment, opened
on first use and closed at exit."""

from __future__ import annotations

import atexit
import logging
import os
import threading
from typing import Optional

from ._env import env_get, redis_url_from_env, relay_from_env
from ._util import OPEN_DBS, OPEN_PUBLISHERS
from .errors import MailagentError
from .publisher import Publisher, has_stream_mode

__all__ = ["default_publisher"]

_log = logging.getLogger("mailagent_events")

_lock = threading.Lock()
_publisher: Optional[Publisher] = None
_shut = False
# Publishers of parent processes, kept alive in a forked child so that
# nothing frees them there (their memory is the parent's copy).
_orphans: list = []


def _from_env() -> Publisher:
    try:
        url, var = redis_url_from_env()
    except ValueError as e:
        # The drop-in must not take the watcher down for a bad variable.
        _log.error("mailagent_events: cannot publish: %s", e)
        return Publisher(None, close_timeout_ms=1000)
    # Taken as set (blank: unset), as the command takes them.
    kw: dict = {"channel": env_get("MAILAGENT_CHANNEL")}
    if url is None:
        # No Redis: the hub of a one-machine install, as MailAgent's
        # processes post to http://127.0.0.1:${SSE_LOCAL_PORT:-9200}. While
        # nothing listens there the events are dropped and counted
        # (dropped_send_error); the caller never waits.
        try:
            relay, token = relay_from_env(local_default=True)
        except ValueError as e:
            _log.error("mailagent_events: cannot publish: %s", e)
            return Publisher(None, close_timeout_ms=1000)
        try:
            p = Publisher(None, relay_url=relay, relay_token=token, close_timeout_ms=1000, **kw)
        except MailagentError as e:
            _log.error("mailagent_events: cannot publish: MAILAGENT_RELAY_URL/"
                       "MAILAGENT_LOCAL_API_TOKEN: %s", e.message)
            return Publisher(None, close_timeout_ms=1000)
        p._via_hub = True
        return p
    stream = env_get("MAILAGENT_STREAM")
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
        _log.error("mailagent_events: cannot publish: %s/MAILAGENT_CHANNEL: %s",
                   var, e.message)
        return Publisher(None, close_timeout_ms=1000)


def default_publisher() -> Publisher:
    """The process-wide Publisher safe_publish uses, opened on first use
    from MAILAGENT_REDIS_URL, else MailAgent's REDIS_URL + REDIS_DB, else
    (no Redis) posting to a relay running as the hub at MAILAGENT_RELAY_URL,
    else at http://127.0.0.1:${SSE_LOCAL_PORT:-9200} as MailAgent's
    loopback does, with MAILAGENT_LOCAL_API_TOKEN; MAILAGENT_CHANNEL and
    MAILAGENT_STREAM (docs/operations.md#environment), and closed at exit
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


def _forget(p: Optional[Publisher]) -> None:
    """Closes the process-wide Publisher (p, or whichever it is when None)
    and forgets it: the next default_publisher() reads the environment
    again (reset_publisher_for_tests)."""
    global _publisher
    with _lock:
        cur = _publisher
        if cur is None or (p is not None and cur is not p):
            return
        _publisher = None
    try:
        cur.close()
    except Exception:
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
