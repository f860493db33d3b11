"""The fire-and-forget publisher: a Python face on mae_publisher.

Every publish call builds the event's JSON line and queues it on the
caller's thread, and returns: one background I/O thread per publisher (in
the C library) sends to Redis. Nothing Redis does ever raises here or holds
the caller up; what happened is counted in stats().
"""

from __future__ import annotations

import ctypes
import logging
import threading
from ctypes import byref, c_char, c_void_p
from typing import Any, Callable, Dict, Mapping, Optional, Union

from . import _layout as L
from ._lib import lib, strerror
from ._util import NO_ID, OPEN_PUBLISHERS, Handle, Text, c_int, int64, internal_id, json_object, real, size, text
from .errors import InvalidArgument, error_for

__all__ = ["Publisher", "LogFn", "LOG_ERROR", "LOG_WARN", "LOG_INFO", "has_stream_mode"]

LOG_ERROR = 0
LOG_WARN = 1
LOG_INFO = 2

#: A log callback: (level, message, repeats). Called on the library's I/O
#: thread, at most once a minute per kind of problem; `repeats` counts the
#: occurrences folded into this call.
LogFn = Callable[[int, str, int], None]

_log = logging.getLogger("mailagent_events")

# Set on the library's I/O thread while it runs a log callback: flush and
# close from there would wait for that very thread.
_tls = threading.local()
# Log callbacks of publishers whose close timed out (see close).
_outliving_callbacks: list = []

_CONFIG_FIELDS = {name for name, _ in L.PublisherConfig._fields_}


def has_stream_mode() -> bool:
    """True when the loaded library's publisher config has stream_key (the
    Redis Stream mode of docs/relay.md), so Publisher(stream_key=...) works."""
    return "stream_key" in _CONFIG_FIELDS


class Publisher:
    """A publisher: one Redis connection owned by a background thread.

    Keyword arguments are the fields of mae_publisher_config; None (the
    default) keeps the library's default:

    - redis_url: ``redis://[[user]:password@]host[:port][/db]`` or
      ``unix:///path``.
    - relay_url: with no redis_url, hub mode: each batch is POSTed to
      ``<relay_url>/api/events/publish`` of a relay running as the hub
      (``http://host[:port]``), with relay_token (if any) sent as
      ``X-MailAgent-Local-Token``. Setting both URLs is InvalidArgument.
      With neither, a disabled publisher whose calls are only counted
      (dropped_disabled).
    - channel (``mailagent:events:v1``), queue_max_events (65536),
      queue_max_bytes (64 MiB), connect_timeout_ms (1000),
      io_timeout_ms (1000), backoff_min_ms (100), backoff_max_ms (5000),
      batch_max_events (256), stream_key / stream_maxlen (when the library
      has stream mode: see has_stream_mode()).
    - log: a callable (level, message, repeats), called on the I/O thread.

    close_timeout_ms is how long close() (and the with-block's end) waits
    for queued events to be sent.

    Thread-safe: any number of threads may publish at once. After close,
    calls raise Closed. In a child process after fork(), publishing is a
    harmless no-op counted as dropped_disabled (open a new Publisher there).

    Raises InvalidArgument with the library's reason (a malformed URL, an
    empty channel, ...) or TypeError for arguments of the wrong type.
    """

    #: True for default_publisher() when it posts to a hub (no Redis URL).
    _via_hub = False

    def __init__(
        self,
        redis_url: Optional[str] = None,
        *,
        channel: Optional[str] = None,
        queue_max_events: Optional[int] = None,
        queue_max_bytes: Optional[int] = None,
        connect_timeout_ms: Optional[int] = None,
        io_timeout_ms: Optional[int] = None,
        stream_key: Optional[str] = None,
        relay_url: Optional[str] = None,
        relay_token: Optional[str] = None,
        stream_maxlen: Optional[int] = None,
        backoff_min_ms: Optional[int] = None,
        backoff_max_ms: Optional[int] = None,
        batch_max_events: Optional[int] = None,
        log: Optional[LogFn] = None,
        close_timeout_ms: int = 2000,
    ) -> None:
        self._handle: Optional[Handle] = None
        self._log_fn: Any = None
        self.close_timeout_ms = c_int(close_timeout_ms, "close_timeout_ms")
        cfg = L.PublisherConfig()
        lib.mae_publisher_config_init(byref(cfg))
        strings = {"redis_url": redis_url, "channel": channel, "stream_key": stream_key,
                   "relay_url": relay_url, "relay_token": relay_token}
        sizes = {
            "queue_max_events": queue_max_events,
            "queue_max_bytes": queue_max_bytes,
            "batch_max_events": batch_max_events,
            "stream_maxlen": stream_maxlen,
        }
        ints = {
            "connect_timeout_ms": connect_timeout_ms,
            "io_timeout_ms": io_timeout_ms,
            "backoff_min_ms": backoff_min_ms,
            "backoff_max_ms": backoff_max_ms,
        }
        for group, conv in ((strings, text), (sizes, size), (ints, c_int)):
            for name, value in group.items():
                if value is None:
                    continue
                if name not in _CONFIG_FIELDS:
                    raise InvalidArgument(
                        f"{name}: this build of libmailagent-events has no such setting"
                    )
                setattr(cfg, name, conv(value, name))
        if log is not None:
            if not callable(log):
                raise TypeError("log must be callable")
            self._log_fn = L.LOG_FN(_log_trampoline(log))
            cfg.log = self._log_fn
        err = ctypes.create_string_buffer(256)
        cfg.error_buf = ctypes.cast(err, ctypes.POINTER(c_char))
        cfg.error_buf_size = len(err)
        out = c_void_p()
        rc = lib.mae_publisher_open(byref(cfg), byref(out))
        if rc < 0:
            raise error_for(rc, err.value.decode("utf-8", "replace") or strerror(rc))
        self._handle = Handle(out.value, "publisher")  # type: ignore[arg-type]
        OPEN_PUBLISHERS.add(self)

    # ---- lifetime ---------------------------------------------------------

    def __enter__(self) -> "Publisher":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        h = getattr(self, "_handle", None)
        if h is not None and not h.closed:
            try:
                self.close()
            except Exception:
                pass

    @property
    def closed(self) -> bool:
        """True once close() has started."""
        return self._handle is None or self._handle.closed

    def __repr__(self) -> str:
        return f"<mailagent_events.Publisher {'closed' if self.closed else 'open'}>"

    def flush(self, timeout_ms: int = -1) -> bool:
        """Waits until everything queued so far was acknowledged by Redis or
        dropped. True when that happened, False when timeout_ms passed first
        (negative: wait for ever). A disabled publisher returns True at once."""
        t = c_int(timeout_ms, "timeout_ms")
        _not_in_callback("flush")
        h = self._h()
        p = h.enter()
        try:
            return lib.mae_publisher_flush(p, t) == 0
        finally:
            h.leave()

    def close(self, timeout_ms: Optional[int] = None) -> bool:
        """Sends what is queued within timeout_ms (default close_timeout_ms),
        stops the I/O thread and frees the publisher. Returns within the
        timeout even when Redis is hung: True when everything queued was
        sent, False when some events were abandoned. Waits for calls in
        progress on other threads; later calls raise Closed. Closing again
        does nothing and returns True. Raises InvalidArgument while a Db
        opened with this publisher is still open."""
        t = self.close_timeout_ms if timeout_ms is None else c_int(timeout_ms, "timeout_ms")
        _not_in_callback("close")
        h = self._handle
        if h is None:
            return True
        address = h.detach()
        if address is None:
            return True
        rc = lib.mae_publisher_close(address, t)
        if rc != 0 and self._log_fn is not None:
            # The I/O thread may have been left to finish on its own (stuck
            # resolving a name) and may still log: its callback must live on.
            _outliving_callbacks.append(self._log_fn)
        self._log_fn = None
        return rc == 0

    def stats(self) -> Dict[str, Any]:
        """The counters (mae_publisher_stats) as a dict: enqueued,
        published, dropped_queue_full, dropped_disabled, dropped_invalid,
        dropped_send_error, queued, queued_bytes, connects,
        connect_failures, connected, in_flight, calls, last_error (str, ""
        when none), last_error_at (epoch s, 0 when none), and in stream mode
        resent and skipped (0 otherwise). They add up at every instant:
        calls = enqueued + dropped_queue_full + dropped_disabled + dropped_invalid,
        enqueued = published + dropped_send_error + queued + in_flight."""
        h = self._h()
        p = h.enter()
        try:
            st = L.PublisherStats()
            lib.mae_publisher_stats_get(p, byref(st))
        finally:
            h.leave()
        out: Dict[str, Any] = {}
        for name, _ in L.PublisherStats._fields_:
            v = getattr(st, name)
            if isinstance(v, bytes):
                v = v.decode("utf-8", "replace")
            out[name] = v
        return out

    # ---- publishing -------------------------------------------------------

    def publish(
        self,
        event_type: str,
        internal_id: Optional[int],
        data: Optional[Union[Mapping[str, Any], Text]] = None,
        source: str = "",
    ) -> None:
        """Queues one event (mae_safe_publish) and returns at once.

        data is a dict (serialised to compact JSON, non-ASCII kept), JSON
        object text, or None for {}; internal_id None is published as null.
        Values the library rejects (an empty event_type or source, data text
        that is not one JSON object) are counted as dropped_invalid and not
        sent. Raises TypeError for arguments of the wrong type or data json
        cannot serialise, InvalidArgument for NaN/infinity in data, Closed
        after close."""
        # The hot path of every event: kept to plain calls, no helpers.
        if event_type is None or source is None:
            raise TypeError(f"{'event_type' if event_type is None else 'source'} must be a str, not None")
        et = text(event_type, "event_type")
        iid = NO_ID if internal_id is None else int64(internal_id, "internal_id")
        body = None if data is None else json_object(data, "data")
        src = text(source, "source")
        h = self._handle
        if h is None:
            raise InvalidArgument("publisher was not opened")
        p = h.enter()
        try:
            lib.mae_safe_publish(p, et, iid, body, src)
        finally:
            h.leave()

    def publish_email_synced(
        self, internal_id: int, notion_page_id: str, source: Optional[str] = None
    ) -> None:
        """email.synced; source None = "sync_store"."""
        self._call(
            lib.mae_publish_email_synced,
            _internal_id(internal_id),
            _required_text(notion_page_id, "notion_page_id"),
            text(source, "source"),
        )

    def publish_email_failed(
        self, internal_id: int, status: str, retry_count: int, next_retry_at: float, error: str
    ) -> None:
        """email.failed; status is "fetch_failed" or "failed"."""
        self._call(
            lib.mae_publish_email_failed,
            _internal_id(internal_id),
            _required_text(status, "status"),
            int64(retry_count, "retry_count"),
            real(next_retry_at, "next_retry_at"),
            _required_text(error, "error"),
        )

    def publish_email_dead_letter(self, internal_id: int, retry_count: int, error: str) -> None:
        """email.dead_letter."""
        self._call(
            lib.mae_publish_email_dead_letter,
            _internal_id(internal_id),
            int64(retry_count, "retry_count"),
            _required_text(error, "error"),
        )

    def publish_outbox_enqueued(
        self,
        internal_id: int,
        outbox_id: int,
        op_type: str,
        target: str,
        intent_source: Optional[str] = None,
    ) -> None:
        """outbox.enqueued; intent_source None is null in data.source."""
        self._call(
            lib.mae_publish_outbox_enqueued,
            _internal_id(internal_id),
            int64(outbox_id, "outbox_id"),
            _required_text(op_type, "op_type"),
            _required_text(target, "target"),
            text(intent_source, "intent_source"),
        )

    def publish_outbox_done(self, internal_id: int, outbox_id: int) -> None:
        """outbox.done."""
        self._call(
            lib.mae_publish_outbox_done, _internal_id(internal_id), int64(outbox_id, "outbox_id")
        )

    def publish_outbox_failed(
        self, internal_id: int, outbox_id: int, attempts: int, last_error: str, next_retry_at: float
    ) -> None:
        """outbox.failed."""
        self._call(
            lib.mae_publish_outbox_failed,
            _internal_id(internal_id),
            int64(outbox_id, "outbox_id"),
            int64(attempts, "attempts"),
            _required_text(last_error, "last_error"),
            real(next_retry_at, "next_retry_at"),
        )

    def publish_outbox_dead_letter(
        self, internal_id: int, outbox_id: int, attempts: int, last_error: str
    ) -> None:
        """outbox.dead_letter."""
        self._call(
            lib.mae_publish_outbox_dead_letter,
            _internal_id(internal_id),
            int64(outbox_id, "outbox_id"),
            int64(attempts, "attempts"),
            _required_text(last_error, "last_error"),
        )

    def publish_llm_success(
        self, internal_id: int, model: str, input_tokens: int, output_tokens: int, latency_ms: int
    ) -> None:
        """llm.success."""
        self._call(
            lib.mae_publish_llm_success,
            _internal_id(internal_id),
            _required_text(model, "model"),
            int64(input_tokens, "input_tokens"),
            int64(output_tokens, "output_tokens"),
            int64(latency_ms, "latency_ms"),
        )

    def publish_llm_failed(
        self, internal_id: int, retry_count: int, next_retry_at: float, error: str
    ) -> None:
        """llm.failed."""
        self._call(
            lib.mae_publish_llm_failed,
            _internal_id(internal_id),
            int64(retry_count, "retry_count"),
            real(next_retry_at, "next_retry_at"),
            _required_text(error, "error"),
        )

    def publish_llm_gave_up(self, internal_id: int, retry_count: int, error: str) -> None:
        """llm.gave_up."""
        self._call(
            lib.mae_publish_llm_gave_up,
            _internal_id(internal_id),
            int64(retry_count, "retry_count"),
            _required_text(error, "error"),
        )

    def _count_invalid(self) -> None:
        """Counts one call the library rejects (dropped_invalid): how the
        drop-in safe_publish reports bad input without raising."""
        self._call(lib.mae_safe_publish, None, _NO_ID, None, None)

    # ---- internals --------------------------------------------------------

    def _h(self) -> Handle:
        if self._handle is None:
            raise InvalidArgument("publisher was not opened")
        return self._handle

    def _call(self, fn: Any, *args: Any) -> None:
        h = self._h()
        p = h.enter()
        try:
            fn(p, *args)
        finally:
            h.leave()


_NO_ID = -(2**63)


def _internal_id(value: Optional[int]) -> int:
    return internal_id(value)


def _required_text(value: Any, name: str) -> bytes:
    """A string argument the C call requires: None is a TypeError here (it
    would only be counted as dropped_invalid); "" is passed on and counted."""
    if value is None:
        raise TypeError(f"{name} must be a str, not None")
    b = text(value, name)
    assert b is not None
    return b


def _not_in_callback(what: str) -> None:
    if getattr(_tls, "in_callback", False):
        raise InvalidArgument(
            f"{what} cannot be called from a log callback: it runs on the publisher's "
            f"own I/O thread, which {what} would wait for"
        )


def _log_trampoline(fn: LogFn) -> Callable[[Any, int, Optional[bytes], int], None]:
    def call(_user: Any, level: int, msg: Optional[bytes], repeats: int) -> None:
        _tls.in_callback = True
        try:
            fn(level, (msg or b"").decode("utf-8", "replace"), repeats)
        except BaseException:  # an exception must not unwind into C
            _log.exception("mailagent_events: the publisher's log callback raised")
        finally:
            _tls.in_callback = False

    return call

