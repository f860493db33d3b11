"""Finds and loads libmailagent-events.so.2, declares the C functions'
prototypes, so every call through ctypes converts its arguments exactly,
and checks the size handshake: every struct the package hands over is the
size the library was built with (mae_*_size(), docs/api.md "ABI").

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
    c_size_t,
    c_void_p,
)
from typing import Any, Callable

from . import _layout as L

__all__ = ["lib", "SONAME", "ENV_VAR", "strerror"]

SONAME = "libmailagent-events.so.2"
ENV_VAR = "MAILAGENT_EVENTS_LIB"
# The library's major version this package is written for (its soname's).
_MAJOR = 2


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


def strerror(code: int) -> str:
    """The library's text for a result code (mae_strerror)."""
    return lib.mae_strerror(code).decode("utf-8", "replace")


def _check_version(version: str) -> None:
    """Refuses a library of another major version: its structs and calls
    are not the ones mirrored here."""
    if version.split(".", 1)[0] != str(_MAJOR):
        raise ImportError(
            f"mailagent_events: needs libmailagent-events {_MAJOR}.x, {lib._name} is {version}"
        )


def _check_sizes(size_of: Callable[[str], int]) -> None:
    """The size handshake: refuses a library whose size for any struct this
    package allocates (_layout.SIZE_FUNCTIONS) differs from the mirror's,
    since it would read or write past the bytes Python owns."""
    wrong = []
    for cls, fn in L.SIZE_FUNCTIONS.items():
        theirs, ours = size_of(fn), ctypes.sizeof(cls)
        if theirs != ours:
            wrong.append(f"{L.C_NAMES[cls]} is {theirs} bytes there, {ours} here")
    if wrong:
        raise ImportError(
            f"mailagent_events: {lib._name} was built with other struct sizes than this "
            f"package ({'; '.join(wrong)}): install the library and the package from the "
            f"same release"
        )


def _library_size(fn: str) -> int:
    f = getattr(lib, fn)
    f.restype = c_size_t
    f.argtypes = []
    return int(f())


_version = lib.mae_version().decode()
_check_version(_version)
_check_sizes(_library_size)
version: str = _version
