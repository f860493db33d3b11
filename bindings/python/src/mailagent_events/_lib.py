"""Finds and loads libmailagent-events.so.2 and declares the C functions'
prototypes, so every call through ctypes converts its arguments exactly.

The library is loaded from $MAILAGENT_EVENTS_LIB when it is set (a path),
else by its soname, as the dynamic linker finds it (after `make install`:
/usr/local/lib, once `ldconfig` has run). ctypes releases the GIL for the
length of every call into a CDLL, so a slow call never holds up other
Python threads.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from ctypes import (
    POINTER,
    c_bool,
    c_char_p,
    c_double,
    c_int,
    c_int64,
    c_ubyte,
    c_void_p,
)
from typing import Any, Type, TypeVar

from . import _layout as L

__all__ = ["lib", "SONAME", "ENV_VAR", "slack", "strerror"]

SONAME = "libmailagent-events.so.2"
ENV_VAR = "MAILAGENT_EVENTS_LIB"

# Bytes allocated past every struct the library writes into, so a library
# whose structs grew (new counters) cannot write past our buffers.
_SLACK = 512


def _load() -> ctypes.CDLL:
    path = os.environ.get(ENV_VAR)
    if path:
        try:
            return ctypes.CDLL(path)
        except OSError as e:
            raise ImportError(f"mailagent_events: cannot load {ENV_VAR}={path}: {e}") from None
    try:
        return ctypes.CDLL(SONAME)
    except OSError as first:
        found = ctypes.util.find_library("mailagent-events")
        if found:
            try:
                return ctypes.CDLL(found)
            except OSError:
                pass
        raise ImportError(
            f"mailagent_events: cannot load {SONAME} ({first}); install the library "
            f"(`make install`, then `ldconfig`) or set {ENV_VAR} to its path"
        ) from None


lib = _load()

_H = c_void_p  # every opaque handle
_S = c_char_p  # borrowed NUL-terminated UTF-8
_I64P = POINTER(c_int64)
_BP = POINTER(c_bool)
_RO = POINTER(L.RetryOutcome)


def _proto(name: str, restype: Any, *argtypes: Any) -> None:
    fn = getattr(lib, name)
    fn.restype = restype
    fn.argtypes = list(argtypes)


_proto("mae_strerror", c_char_p, c_int)
_proto("mae_version", c_char_p)

# publisher.h
_proto("mae_publisher_config_init", None, c_void_p)
_proto("mae_publisher_open", c_int, c_void_p, POINTER(_H))
_proto("mae_publisher_flush", c_int, _H, c_int)
_proto("mae_publisher_close", c_int, _H, c_int)
_proto("mae_publisher_stats_get", None, _H, c_void_p)
_proto("mae_safe_publish", None, _H, _S, c_int64, _S, _S)
_proto("mae_publish_email_synced", None, _H, c_int64, _S, _S)
_proto("mae_publish_email_failed", None, _H, c_int64, _S, c_int64, c_double, _S)
_proto("mae_publish_email_dead_letter", None, _H, c_int64, c_int64, _S)
_proto("mae_publish_outbox_enqueued", None, _H, c_int64, c_int64, _S, _S, _S)
_proto("mae_publish_outbox_done", None, _H, c_int64, c_int64)
_proto("mae_publish_outbox_failed", None, _H, c_int64, c_int64, c_int64, _S, c_double)
_proto("mae_publish_outbox_dead_letter", None, _H, c_int64, c_int64, c_int64, _S)
_proto("mae_publish_llm_success", None, _H, c_int64, _S, c_int64, c_int64, c_int64)
_proto("mae_publish_llm_failed", None, _H, c_int64, c_int64, c_double, _S)
_proto("mae_publish_llm_gave_up", None, _H, c_int64, c_int64, _S)

# db.h
_proto("mae_counts_free", None, c_void_p)
_proto("mae_db_config_init", None, c_void_p)
_proto("mae_db_open", c_int, c_void_p, POINTER(_H))
_proto("mae_db_close", None, _H)
_proto("mae_db_errmsg", c_char_p, _H)
_proto("mae_db_sqlite", c_void_p, _H)
_proto("mae_db_begin", c_int, _H)
_proto("mae_db_commit", c_int, _H)
_proto("mae_db_rollback", c_int, _H)

# sync_store.h
_proto("mae_sync_store_upsert", c_int, _H, POINTER(L.Email))
_proto("mae_sync_store_mark_synced", c_int, _H, c_int64, _S, _S, _S)
_proto("mae_sync_store_mark_failed", c_int, _H, c_int64, _S, _S, c_void_p)
_proto("mae_sync_store_get", c_int, _H, c_int64, POINTER(POINTER(L.EmailRow)))
_proto("mae_sync_store_list", c_int, _H, _S, c_int, POINTER(POINTER(L.EmailList)))
_proto("mae_sync_store_due_for_retry", c_int, _H, c_double, c_int, POINTER(POINTER(L.EmailList)))
_proto("mae_sync_store_count_by_status", c_int, _H, POINTER(POINTER(L.Counts)))
_proto("mae_email_row_free", None, c_void_p)
_proto("mae_email_list_free", None, c_void_p)

# outbox.h
_proto("mae_outbox_enqueue", c_int, _H, c_int64, _S, _S, _S, _S, _I64P, _BP)
_proto("mae_outbox_mark_processing", c_int, _H, c_int64)
_proto("mae_outbox_mark_done", c_int, _H, c_int64)
_proto("mae_outbox_mark_failed", c_int, _H, c_int64, _S, c_void_p)
_proto("mae_outbox_retry_dead_letter", c_int, _H, c_int64)
_proto("mae_outbox_get", c_int, _H, c_int64, POINTER(POINTER(L.OutboxRow)))
_proto("mae_outbox_poll_ready", c_int, _H, _S, c_int, POINTER(POINTER(L.OutboxList)))
_proto("mae_outbox_list_for_email", c_int, _H, c_int64, POINTER(POINTER(L.OutboxList)))
_proto("mae_outbox_list_dead_letters", c_int, _H, c_int, POINTER(POINTER(L.OutboxList)))
_proto("mae_outbox_queue_depth", c_int, _H, c_void_p)
_proto("mae_outbox_row_free", None, c_void_p)
_proto("mae_outbox_list_free", None, c_void_p)

# llm.h
_proto("mae_llm_store_mark_pending", c_int, _H, c_int64, _S, _S)
_proto("mae_llm_store_mark_success", c_int, _H, c_int64, _S, POINTER(L.LlmUsage))
_proto("mae_llm_store_mark_failed", c_int, _H, c_int64, _S, c_void_p)
_proto("mae_llm_store_reset_stale_pending", c_int, _H, c_double, _I64P)
_proto("mae_llm_store_get", c_int, _H, c_int64, POINTER(POINTER(L.LlmRow)))
_proto("mae_llm_store_due_for_retry", c_int, _H, c_double, c_int, POINTER(POINTER(L.LlmList)))
_proto("mae_llm_store_count_by_status", c_int, _H, POINTER(POINTER(L.Counts)))
_proto("mae_llm_store_totals", c_int, _H, c_void_p)
_proto("mae_llm_row_free", None, c_void_p)
_proto("mae_llm_list_free", None, c_void_p)

T = TypeVar("T", bound=ctypes.Structure)


def slack(cls: Type[T]) -> T:
    """A zeroed `cls` with _SLACK spare bytes after it, for the library to
    write into: a newer library with a larger struct cannot overrun it."""
    buf = (c_ubyte * (ctypes.sizeof(cls) + _SLACK))()
    return cls.from_buffer(buf)


def strerror(code: int) -> str:
    """The library's text for a result code (mae_strerror)."""
    return lib.mae_strerror(code).decode("utf-8", "replace")


def _check_config_layout(cls: Type[ctypes.Structure], init_name: str) -> None:
    """Refuses a library whose config struct is larger than the one mirrored
    here: it would read fields past what Python filled in. The library's
    init function writes the whole struct, so bytes it changes past our
    size reveal the difference."""
    size = ctypes.sizeof(cls)
    buf = (c_ubyte * (size + _SLACK))(*([0xA5] * (size + _SLACK)))
    getattr(lib, init_name)(buf)
    if any(b != 0xA5 for b in bytes(buf)[size:]):
        raise ImportError(
            f"mailagent_events: {init_name} in {lib._name} writes past the {size} bytes of "
            f"{L.C_NAMES[cls]} known to this package: the library is newer than "
            f"mailagent_events/_layout.py (update it)"
        )


_check_config_layout(L.PublisherConfig, "mae_publisher_config_init")
_check_config_layout(L.DbConfig, "mae_db_config_init")

_version = lib.mae_version().decode()
if not _version.startswith("1."):
    raise ImportError(f"mailagent_events: needs libmailagent-events 1.x, {lib._name} is {_version}")
version: str = _version
