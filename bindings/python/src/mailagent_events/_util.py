"""Argument conversion shared by the publisher and the stores: Python values
checked and turned into what the C prototypes take, and the guard that keeps
a C handle from being used after it was freed."""

from __future__ import annotations

import json
import operator
import os
import threading
import weakref
from typing import Any, Mapping, Optional, Union

from .errors import Closed, InvalidArgument

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
NO_ID = INT64_MIN  # MAE_NO_ID: internal_id null in the envelope

Text = Union[str, bytes]


def text(value: Optional[Text], name: str) -> Optional[bytes]:
    """UTF-8 bytes for a str (bytes pass as they are), None for None.

    Lone surrogates are passed through as bytes; the library repairs invalid
    UTF-8 to U+FFFD. A NUL would silently cut the C string, so it raises."""
    if type(value) is str:  # the common case first: this is on the hot path
        b = value.encode("utf-8", "surrogatepass")
    elif value is None:
        return None
    elif isinstance(value, str):
        b = str(value).encode("utf-8", "surrogatepass")
    elif isinstance(value, (bytes, bytearray, memoryview)):
        b = bytes(value)
    else:
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    if b"\0" in b:
        raise InvalidArgument(f"{name} contains a NUL character")
    return b


def int64(value: Any, name: str) -> int:
    """An int in the int64 range (ctypes would wrap anything larger)."""
    if type(value) is int and INT64_MIN <= value <= INT64_MAX:
        return value
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not bool")
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, not {type(value).__name__}") from None
    if not INT64_MIN <= v <= INT64_MAX:
        raise InvalidArgument(f"{name} {v} is out of the int64 range")
    return v


def c_int(value: Any, name: str) -> int:
    """An int in the range of C's int (timeouts, limits)."""
    v = int64(value, name)
    if not -(2**31) <= v < 2**31:
        raise InvalidArgument(f"{name} {v} is out of the range of a C int")
    return v


def size(value: Any, name: str) -> int:
    """A non-negative int that fits a size_t."""
    v = int64(value, name)
    if v < 0:
        raise InvalidArgument(f"{name} must not be negative")
    return v


def real(value: Any, name: str) -> float:
    """A float from an int or float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    return float(value)


def internal_id(value: Optional[int]) -> int:
    """An envelope internal_id: None gives MAE_NO_ID (null)."""
    return NO_ID if value is None else int64(value, "internal_id")


# One encoder made once: json.dumps with arguments builds a new one per call.
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def json_object(value: Optional[Union[Mapping[str, Any], Text]], name: str) -> Optional[bytes]:
    """Compact JSON text for a mapping (non-ASCII kept as is, like the
    envelope); a str or bytes is taken as JSON text already and is left for
    the library to judge; None stays None.

    Raises TypeError for a value json cannot serialise and InvalidArgument
    for NaN or infinity (not JSON)."""
    if value is None or isinstance(value, (str, bytes, bytearray, memoryview)):
        return text(value, name)
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a dict, not {type(value).__name__}")
    try:
        s = _encode(value)
    except ValueError as e:  # NaN/inf, or a circular reference
        raise InvalidArgument(f"{name} is not valid JSON: {e}") from None
    except TypeError as e:
        raise TypeError(f"{name} is not JSON serialisable: {e}") from None
    return s.encode("utf-8", "surrogatepass")


def fspath(value: Any, name: str) -> bytes:
    """A filesystem path as bytes (str, bytes or os.PathLike)."""
    try:
        p = os.fsencode(value)
    except TypeError:
        raise TypeError(f"{name} must be a path, not {type(value).__name__}") from None
    if b"\0" in p:
        raise InvalidArgument(f"{name} contains a NUL character")
    return p


class Handle:
    """A C handle (an address) shared by threads, that close frees exactly
    once, after every call in progress on it has returned.

    Calls take the address with enter() and give it back with leave();
    close() stops new calls, waits for the running ones, and hands the
    address over to be freed. `borrowers` counts other handles that hold
    this one's address (a Db borrows its Publisher): close refuses while
    there are any. After fork() the child gets fresh locks (a thread of the
    parent may have held them) and no calls in progress."""

    _live: "weakref.WeakSet[Handle]" = weakref.WeakSet()

    def __init__(self, address: int, what: str) -> None:
        self.address: Optional[int] = address
        self.what = what
        self.active = 0
        self.closing = False
        self.borrowers = 0
        self.forked = False  # set in a child of the process that opened it
        self.lock = threading.Lock()
        self.idle = threading.Condition(self.lock)
        Handle._live.add(self)

    def enter(self) -> int:
        """The address, counted as in use until leave(); Closed after close."""
        with self.lock:
            if self.address is None or self.closing:
                raise Closed(f"{self.what} is closed")
            self.active += 1
            return self.address

    def leave(self) -> None:
        with self.lock:
            self.active -= 1
            if self.active == 0 and self.closing:
                self.idle.notify_all()

    def detach(self) -> Optional[int]:
        """Stops new calls, waits for calls in progress, and returns the
        address for the caller to free (None when already closed)."""
        with self.lock:
            if self.address is None or self.closing:
                return None
            if self.borrowers:
                raise InvalidArgument(
                    f"{self.what} is still used by {self.borrowers} open Db; close it first"
                )
            self.closing = True
            while self.active:
                self.idle.wait()
            address, self.address = self.address, None
            return address

    @property
    def closed(self) -> bool:
        return self.address is None or self.closing

    @classmethod
    def _after_fork_in_child(cls) -> None:
        for h in list(cls._live):
            h.lock = threading.Lock()
            h.idle = threading.Condition(h.lock)
            h.active = 0
            h.forked = True


os.register_at_fork(after_in_child=Handle._after_fork_in_child)

# Every open Db and Publisher, for the exit handler (mailagent_events._default)
# that closes them before the interpreter finalises.
OPEN_DBS: "weakref.WeakSet[Any]" = weakref.WeakSet()
OPEN_PUBLISHERS: "weakref.WeakSet[Any]" = weakref.WeakSet()
