"""The environment's configuration, read exactly as core/env.c reads it for
the command, the relay and the demo watcher (docs/operations.md#environment).
tests/python/test_env_parity.py holds both to one table."""

from __future__ import annotations

import os
from typing import Mapping, Optional, Tuple

__all__ = ["env_get", "redis_url_from_env", "relay_from_env", "credential", "compose_url",
           "DEFAULT_REDIS_DB", "DEFAULT_LOCAL_PORT"]

#: The database MailAgent appends to REDIS_URL when REDIS_DB is unset.
DEFAULT_REDIS_DB = 2

#: The port MailAgent's processes post to when there is no Redis
#: (SSE_LOCAL_PORT's default).
DEFAULT_LOCAL_PORT = 9200

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


def credential(name: str, environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """A credential variable (WEBHOOK_SECRET, MAILAGENT_LOCAL_API_TOKEN):
    its value, None when unset or empty. Raises ValueError naming the
    variable (never the value) for one with leading or trailing whitespace
    or a control character, which no request header could carry."""
    v = (os.environ if environ is None else environ).get(name)
    if not v:
        return None
    if v[0] in _WS + "\v\f" or v[-1] in _WS + "\v\f":
        raise ValueError(f"{name} has leading or trailing whitespace, so no request could "
                         "ever match it (header values arrive trimmed): remove it")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in v):
        raise ValueError(f"{name} contains a control character, which no request "
                         "header can carry: remove it")
    return v


def relay_from_env(
    environ: Optional[Mapping[str, str]] = None, *, local_default: bool = False,
) -> Tuple[Optional[str], Optional[str]]:
    """(relay_url, relay_token): where events go when there is no Redis URL.

    MAILAGENT_RELAY_URL (trimmed) when set; else, with local_default (the
    process-wide publisher of safe_publish, as MailAgent's loopback),
    "http://127.0.0.1:${SSE_LOCAL_PORT:-9200}"; else None. The token is
    MAILAGENT_LOCAL_API_TOKEN (see credential). Raises ValueError naming the
    variable for an SSE_LOCAL_PORT that is not a port from 1 to 65535 or a
    token no header can carry."""
    token = credential("MAILAGENT_LOCAL_API_TOKEN", environ)
    v = env_get("MAILAGENT_RELAY_URL", environ)
    if v is not None:
        return v.strip(_WS), token
    if not local_default:
        return None, token
    pv = env_get("SSE_LOCAL_PORT", environ)
    port = _db(pv) if pv is not None else DEFAULT_LOCAL_PORT
    if port is None or not 1 <= port <= 65535:
        raise ValueError(f"SSE_LOCAL_PORT must be a port number from 1 to 65535, not '{pv}'")
    return f"http://127.0.0.1:{port}", token
