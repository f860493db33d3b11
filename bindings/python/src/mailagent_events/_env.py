"""The environment's configuration, read exactly as core/env.c reads it for
the command, the relay and the demo watcher (docs/operations.md#environment).
tests/python/test_env_parity.py holds both to one table."""

from __future__ import annotations

import os
from typing import Mapping, Optional, Tuple

__all__ = ["env_get", "redis_url_from_env", "compose_url", "DEFAULT_REDIS_DB"]

#: The database MailAgent appends to REDIS_URL when REDIS_DB is unset.
DEFAULT_REDIS_DB = 2

_WS = " \t\r\n"


def env_get(name: str, environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """The variable's value, or None when it is unset or blank (empty or
    only spaces, tabs, CR and LF): a blank variable counts as unset."""
    v = (os.environ if environ is None else environ).get(name)
    if v is None or not v.strip(_WS):
        return None
    return v


def _db(value: str) -> Optional[int]:
    s = value.strip(_WS)
    if s.startswith("+"):
        s = s[1:]
    if not s or not all("0" <= c <= "9" for c in s):
        return None
    n = int(s)
    return n if n <= 2147483647 else None


def redis_url_from_env(
    environ: Optional[Mapping[str, str]] = None,
) -> Tuple[Optional[str], Optional[str]]:
    """(url, variable it came from), or (None, None) when none is configured.

    MAILAGENT_REDIS_URL (trimmed) when set; else MailAgent's REDIS_URL with
    REDIS_DB (default 2) appended as f"{REDIS_URL}/{REDIS_DB}": trailing '/'
    dropped first, a "/0" already there replaced by REDIS_DB (what redis-py
    makes of MailAgent's "/0/2"), unix:///path given "?db=N". Raises
    ValueError naming the variable for a REDIS_DB that is not a number from
    0 to 2147483647, or a REDIS_URL that names another database or has a
    query (MailAgent's composition would point somewhere else)."""
    v = env_get("MAILAGENT_REDIS_URL", environ)
    if v is not None:
        return v.strip(_WS), "MAILAGENT_REDIS_URL"
    v = env_get("REDIS_URL", environ)
    if v is None:
        return None, None
    dbv = env_get("REDIS_DB", environ)
    db = _db(dbv) if dbv is not None else DEFAULT_REDIS_DB
    if db is None:
        raise ValueError(f"REDIS_DB must be a database number from 0 to 2147483647, not '{dbv}'")
    return compose_url(v, db), "REDIS_URL"


def compose_url(redis_url: str, redis_db: object) -> str:
    """MailAgent's f"{redis_url}/{redis_db}", made a URL this library reads
    as redis-py reads MailAgent's: surrounding whitespace and trailing '/'
    dropped, a "/0" replaced by the database, unix:///path given "?db=N".
    Raises ValueError for a database that is not a number from 0 to
    2147483647, or a URL naming another database or with a query."""
    db = redis_db if type(redis_db) is int else _db(str(redis_db))
    if db is None or not 0 <= db <= 2147483647:
        raise ValueError(f"REDIS_DB must be a database number from 0 to 2147483647, "
                         f"not '{redis_db}'")
    url = redis_url.strip(_WS).rstrip("/")
    if "?" in url or "#" in url:
        raise ValueError("REDIS_URL has a query or fragment, to which MailAgent's "
                         "\"/$REDIS_DB\" cannot be appended: give the database in REDIS_DB, "
                         "or the whole URL in MAILAGENT_REDIS_URL")
    if url.startswith("unix://"):
        return f"{url}?db={db}"
    scheme, sep, rest = url.partition("://")
    # The host starts after the last '@': a password may hold a '/'.
    userinfo, at, hostpart = rest.rpartition("@")
    if sep and "/" in hostpart:
        host, _, path = hostpart.partition("/")
        if path == "0":
            url = f"{scheme}://{userinfo}{at}{host}"
        else:
            raise ValueError(f"REDIS_URL already names a database (/{path[:39]}), to which "
                             f"MailAgent would append \"/{db}\": give the database in "
                             "REDIS_DB, or the whole URL in MAILAGENT_REDIS_URL")
    return f"{url}/{db}"
