"""The library's result codes as Python values and exceptions.

Failures (the negative MAE_E* codes) are raised as one exception class per
code, all under MailagentError. MAE_SKIPPED is not a failure: calls that can
skip return Result.SKIPPED (or a value that says so) instead of raising.
"""

from __future__ import annotations

import enum
from typing import Dict, Optional, Type

__all__ = [
    "Result",
    "OK",
    "SKIPPED",
    "MailagentError",
    "InvalidArgument",
    "NoMemory",
    "NotFound",
    "InvalidState",
    "Busy",
    "DatabaseError",
    "Timeout",
    "Closed",
    "error_for",
]

# The codes of include/mailagent/common.h (MAE_ERRNO_MAP).
MAE_OK = 0
MAE_SKIPPED = 1
MAE_EINVAL = -1
MAE_ENOMEM = -2
MAE_ENOTFOUND = -3
MAE_ESTATE = -4
MAE_EBUSY = -5
MAE_EDB = -6
MAE_ETIMEDOUT = -7


class Result(enum.IntEnum):
    """The non-failure outcomes of a call: it did its work (OK) or there was
    nothing to do (SKIPPED, e.g. an outbox intent already done)."""

    OK = MAE_OK
    SKIPPED = MAE_SKIPPED


OK = Result.OK
SKIPPED = Result.SKIPPED


class MailagentError(Exception):
    """Base of every failure reported by the library.

    `code` is the library's MAE_E* code (negative int), `message` the detail
    the library gave (mae_db_errmsg, or the open call's error line), or the
    code's text (mae_strerror) when it gave none.
    """

    code: int = 0

    def __init__(self, message: str, code: Optional[int] = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidArgument(MailagentError, ValueError):
    """MAE_EINVAL: a bad argument; nothing was written."""

    code = MAE_EINVAL


class NoMemory(MailagentError, MemoryError):
    """MAE_ENOMEM: the library ran out of memory."""

    code = MAE_ENOMEM


class NotFound(MailagentError, LookupError):
    """MAE_ENOTFOUND: no such row."""

    code = MAE_ENOTFOUND


class InvalidState(MailagentError):
    """MAE_ESTATE: the transition is not allowed from the row's status."""

    code = MAE_ESTATE


class Busy(MailagentError):
    """MAE_EBUSY: the database was still locked after the busy timeout."""

    code = MAE_EBUSY


class DatabaseError(MailagentError):
    """MAE_EDB: any other SQLite failure (constraint, I/O, corrupt file)."""

    code = MAE_EDB


class Timeout(MailagentError, TimeoutError):
    """MAE_ETIMEDOUT: a flush or close deadline passed before everything
    queued was sent."""

    code = MAE_ETIMEDOUT


class Closed(InvalidArgument):
    """The handle was closed: the call was refused before it reached the
    library (which would have been handed a freed pointer)."""


_BY_CODE: Dict[int, Type[MailagentError]] = {
    cls.code: cls
    for cls in (InvalidArgument, NoMemory, NotFound, InvalidState, Busy, DatabaseError, Timeout)
}


def error_for(code: int, message: str) -> MailagentError:
    """The exception for a negative library code, carrying `message`."""
    cls = _BY_CODE.get(code, MailagentError)
    return cls(message, code)
