"""Runs the caller's own SQL on a Db's connection (mae_db_sqlite), through
the libsqlite3 the library is linked with, so it can share a transaction
with store writes. One statement per call, positional ? parameters."""

from __future__ import annotations

import ctypes
import ctypes.util
from ctypes import POINTER, byref, c_char_p, c_double, c_int, c_int64, c_void_p
from typing import Any, List, Sequence, Tuple

from ._util import int64, text
from .errors import Busy, DatabaseError, InvalidArgument, MailagentError

__all__ = ["execute"]


def _load() -> ctypes.CDLL:
    # libmailagent-events is linked with libsqlite3.so.0, so it is loaded
    # already: dlopen of the soname returns that very copy.
    for name in ("libsqlite3.so.0", ctypes.util.find_library("sqlite3")):
        if name:
            try:
                return ctypes.CDLL(name)
            except OSError:
                continue
    raise ImportError("mailagent_events: cannot load libsqlite3.so.0")


_sq = _load()
for _name, _res, _args in (
    ("sqlite3_prepare_v2", c_int, [c_void_p, c_char_p, c_int, POINTER(c_void_p), POINTER(c_void_p)]),
    ("sqlite3_finalize", c_int, [c_void_p]),
    ("sqlite3_step", c_int, [c_void_p]),
    ("sqlite3_errmsg", c_char_p, [c_void_p]),
    ("sqlite3_bind_parameter_count", c_int, [c_void_p]),
    ("sqlite3_bind_null", c_int, [c_void_p, c_int]),
    ("sqlite3_bind_int64", c_int, [c_void_p, c_int, c_int64]),
    ("sqlite3_bind_double", c_int, [c_void_p, c_int, c_double]),
    ("sqlite3_bind_text", c_int, [c_void_p, c_int, c_char_p, c_int, c_void_p]),
    ("sqlite3_bind_blob", c_int, [c_void_p, c_int, c_char_p, c_int, c_void_p]),
    ("sqlite3_column_count", c_int, [c_void_p]),
    ("sqlite3_column_type", c_int, [c_void_p, c_int]),
    ("sqlite3_column_int64", c_int64, [c_void_p, c_int]),
    ("sqlite3_column_double", c_double, [c_void_p, c_int]),
    ("sqlite3_column_text", c_void_p, [c_void_p, c_int]),
    ("sqlite3_column_blob", c_void_p, [c_void_p, c_int]),
    ("sqlite3_column_bytes", c_int, [c_void_p, c_int]),
):
    _f = getattr(_sq, _name)
    _f.restype = _res
    _f.argtypes = _args

_OK, _BUSY, _LOCKED, _ROW, _DONE = 0, 5, 6, 100, 101
_INTEGER, _FLOAT, _TEXT, _BLOB, _NULL = 1, 2, 3, 4, 5
_TRANSIENT = c_void_p(-1)  # SQLITE_TRANSIENT: SQLite copies the bound value


def _error(conn: int, what: str, rc: int) -> MailagentError:
    msg = f"{what}: {(_sq.sqlite3_errmsg(conn) or b'').decode('utf-8', 'replace')}"
    if rc & 0xFF in (_BUSY, _LOCKED):
        return Busy(msg)
    return DatabaseError(msg)


def _bind(conn: int, st: int, i: int, v: Any) -> int:
    if v is None:
        return _sq.sqlite3_bind_null(st, i)
    if isinstance(v, (bool, int)):
        return _sq.sqlite3_bind_int64(st, i, int64(int(v), f"parameter {i}"))
    if isinstance(v, float):
        return _sq.sqlite3_bind_double(st, i, v)
    if isinstance(v, str):
        b = v.encode("utf-8", "surrogatepass")
        return _sq.sqlite3_bind_text(st, i, b, len(b), _TRANSIENT)
    if isinstance(v, (bytes, bytearray, memoryview)):
        b = bytes(v)
        return _sq.sqlite3_bind_blob(st, i, b, len(b), _TRANSIENT)
    raise TypeError(f"parameter {i}: unsupported type {type(v).__name__}")


def _column(st: int, i: int) -> Any:
    t = _sq.sqlite3_column_type(st, i)
    if t == _INTEGER:
        return _sq.sqlite3_column_int64(st, i)
    if t == _FLOAT:
        return _sq.sqlite3_column_double(st, i)
    if t == _NULL:
        return None
    if t == _TEXT:
        p = _sq.sqlite3_column_text(st, i)
        return ctypes.string_at(p, _sq.sqlite3_column_bytes(st, i)).decode("utf-8", "replace")
    p = _sq.sqlite3_column_blob(st, i)
    n = _sq.sqlite3_column_bytes(st, i)
    return ctypes.string_at(p, n) if p else b""


def execute(conn: int, sql: str, params: Sequence[Any] = ()) -> List[Tuple[Any, ...]]:
    """Runs one SQL statement on the sqlite3* `conn` and returns its rows.
    The caller holds the Db's lock."""
    b = text(sql, "sql")
    assert b is not None
    if isinstance(params, (str, bytes)) or not isinstance(params, Sequence):
        raise TypeError("params must be a sequence (positional ? parameters)")
    st = c_void_p()
    tail = c_void_p()
    buf = ctypes.create_string_buffer(b)
    rc = _sq.sqlite3_prepare_v2(conn, buf, len(b) + 1, byref(st), byref(tail))
    if rc != _OK:
        raise _error(conn, "prepare", rc)
    try:
        if st.value is None:
            raise InvalidArgument("sql holds no statement")
        rest = ctypes.string_at(tail.value) if tail.value else b""
        if rest.strip(b" \t\r\n;"):
            raise InvalidArgument("sql must hold one statement")
        n = _sq.sqlite3_bind_parameter_count(st)
        if n != len(params):
            raise InvalidArgument(f"sql has {n} parameters, {len(params)} given")
        for i, v in enumerate(params, 1):
            rc = _bind(conn, st.value, i, v)
            if rc != _OK:
                raise _error(conn, "bind", rc)
        rows: List[Tuple[Any, ...]] = []
        ncol = _sq.sqlite3_column_count(st)
        while True:
            rc = _sq.sqlite3_step(st)
            if rc == _ROW:
                rows.append(tuple(_column(st.value, i) for i in range(ncol)))
            elif rc == _DONE:
                return rows
            else:
                raise _error(conn, "step", rc)
    finally:
        if st.value is not None:
            _sq.sqlite3_finalize(st)
