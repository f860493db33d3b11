"""The database handle (mae_db) and its three stores: the sync store
(email_metadata), the outbox (email_outbox) and the LLM store
(llm_processing). Every write announces itself as an event after it is
committed, through the Publisher the Db was opened with."""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from ctypes import POINTER, byref, c_bool, c_char, c_int64, c_void_p
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from . import _layout as L
from . import _sqlite
from ._lib import lib, strerror
from ._util import OPEN_DBS, Text, c_int, fspath, int64, json_object, real, text
from .errors import Closed, Result, error_for
from .publisher import Publisher
from .rows import (
    Email,
    EmailRow,
    Enqueued,
    LlmRow,
    LlmTotals,
    OutboxRow,
    QueueDepth,
    RetryOutcome,
    from_c,
)

__all__ = ["Db", "SyncStore", "Outbox", "LlmStore"]

PathLike = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]
JsonObject = Union[Mapping[str, Any], Text]


class Db:
    """One SQLite connection to the shared database, with the stores on it:
    ``db.sync_store``, ``db.outbox``, ``db.llm_store``.

    Opens (creating the file and the missing tables unless read_only) the
    database at `path`. Keyword arguments are the fields of mae_db_config;
    None keeps the library's default: publisher (a Publisher, borrowed: it
    cannot be closed while this Db is open; None = state only, no events),
    busy_timeout_ms (30000), email_max_retries, outbox_max_attempts,
    llm_max_retries (5 each), clock (a callable returning epoch seconds,
    for tests), read_only.

    Every failure raises the MailagentError subclass of its code with the
    library's detail (mae_db_errmsg). Calls from several threads are
    serialised (a mae_db is not thread-safe); after close they raise
    Closed; in a child process after fork() they raise Closed too (a SQLite
    connection must not cross a fork: open a new Db there).
    """

    def __init__(
        self,
        path: PathLike,
        *,
        publisher: Optional[Publisher] = None,
        busy_timeout_ms: Optional[int] = None,
        email_max_retries: Optional[int] = None,
        outbox_max_attempts: Optional[int] = None,
        llm_max_retries: Optional[int] = None,
        clock: Optional[Callable[[], float]] = None,
        read_only: bool = False,
    ) -> None:
        self._db: Optional[int] = None
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._publisher: Optional[Publisher] = None
        self._clock_fn: Any = None
        self.in_transaction = False
        self.path = os.fsdecode(fspath(path, "path"))
        cfg = L.DbConfig()
        lib.mae_db_config_init(byref(cfg))
        cfg.path = fspath(path, "path")
        for name, value in (
            ("busy_timeout_ms", busy_timeout_ms),
            ("email_max_retries", email_max_retries),
            ("outbox_max_attempts", outbox_max_attempts),
            ("llm_max_retries", llm_max_retries),
        ):
            if value is not None:
                setattr(cfg, name, c_int(value, name))
        cfg.read_only = bool(read_only)
        if clock is not None:
            if not callable(clock):
                raise TypeError("clock must be callable")
            self._clock_fn = L.CLOCK_FN(lambda _user: float(clock()))
            cfg.clock = self._clock_fn
        if publisher is not None and not isinstance(publisher, Publisher):
            raise TypeError(f"publisher must be a Publisher, not {type(publisher).__name__}")
        err = ctypes.create_string_buffer(256)
        cfg.error_buf = ctypes.cast(err, POINTER(c_char))
        cfg.error_buf_size = len(err)
        h = publisher._handle if publisher is not None else None
        if h is not None:
            with h.lock:  # pin the publisher: its close refuses from now on
                if h.closed:
                    raise Closed("publisher is closed")
                h.borrowers += 1
                cfg.publisher = h.address
        out = c_void_p()
        rc = lib.mae_db_open(byref(cfg), byref(out))
        if rc < 0:
            if h is not None:
                with h.lock:
                    h.borrowers -= 1
            raise error_for(rc, err.value.decode("utf-8", "replace") or strerror(rc))
        self._db = out.value
        self._publisher = publisher
        self.sync_store = SyncStore(self)
        self.outbox = Outbox(self)
        self.llm_store = LlmStore(self)
        OPEN_DBS.add(self)

    # ---- lifetime ---------------------------------------------------------

    def __enter__(self) -> "Db":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_db", None) is not None:
            try:
                self.close()
            except Exception:
                pass

    @property
    def closed(self) -> bool:
        """True after close()."""
        return self._db is None

    def __repr__(self) -> str:
        return f"<mailagent_events.Db {self.path!r} {'closed' if self.closed else 'open'}>"

    @property
    def publisher(self) -> Optional[Publisher]:
        """The Publisher this Db announces its writes through (None: none)."""
        return self._publisher

    def close(self) -> None:
        """Closes the database; an open transaction is rolled back and its
        events discarded. Closing again does nothing. In a child process
        after fork() the handle is abandoned, not closed (it belongs to
        the parent's connection)."""
        forked = os.getpid() != self._pid
        if not forked:
            self._lock.acquire()
        try:
            db, self._db = self._db, None
            if db is None:
                return
            self.in_transaction = False
            if not forked:
                lib.mae_db_close(db)
            pub, self._publisher = self._publisher, None
            if pub is not None and pub._handle is not None:
                h = pub._handle
                with h.lock:
                    h.borrowers -= 1
        finally:
            if not forked:
                self._lock.release()

    # ---- transactions -----------------------------------------------------

    def begin(self) -> None:
        """BEGIN IMMEDIATE: store writes from now on hold their events until
        commit(). InvalidArgument inside a transaction; Busy when the
        database stays locked past the busy timeout."""
        self._run(lib.mae_db_begin)
        self.in_transaction = True

    def commit(self) -> None:
        """Commits, then publishes the held events in order. A failed commit
        leaves the transaction open with its events held."""
        self._run(lib.mae_db_commit)
        self.in_transaction = False

    def rollback(self) -> None:
        """Rolls back and discards the held events."""
        self._run(lib.mae_db_rollback)
        self.in_transaction = False

    @contextlib.contextmanager
    def transaction(self) -> Iterator["Db"]:
        """``with db.transaction():`` commits when the block ends normally
        (then the events of its store writes are published), and rolls
        back when it raises (the events are discarded) or when the commit
        fails (and the commit's error is raised)."""
        self.begin()
        try:
            yield self
        except BaseException:
            with contextlib.suppress(Exception):
                self.rollback()
            raise
        try:
            self.commit()
        except BaseException:
            with contextlib.suppress(Exception):
                self.rollback()
            raise

    def execute(self, sql: str, params: Sequence[Any] = ()) -> List[Tuple[Any, ...]]:
        """Runs one SQL statement of the caller's own on this connection
        (inside the current transaction, if any) and returns its rows as
        tuples. `params` fill its ``?`` placeholders (None, int, float,
        str, bytes). Raises DatabaseError or Busy with SQLite's message."""
        with self._locked() as db:
            conn = lib.mae_db_sqlite(db)
            return _sqlite.execute(conn, sql, params)

    # ---- internals --------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[int]:
        if os.getpid() != self._pid:
            raise Closed("Db was opened by the parent process; open a new one after fork()")
        with self._lock:
            if self._db is None:
                raise Closed("Db is closed")
            yield self._db

    def _run(self, fn: Any, *args: Any) -> int:
        """Calls fn(db, *args) under the lock; a negative code raises its
        exception with mae_db_errmsg. Returns MAE_OK or MAE_SKIPPED."""
        with self._locked() as db:
            rc = fn(db, *args)
            if rc < 0:
                msg = (lib.mae_db_errmsg(db) or b"").decode("utf-8", "replace")
                raise error_for(rc, msg or strerror(rc))
            return int(rc)


def _counts(db: Db, fn: Any) -> Dict[str, int]:
    out = POINTER(L.Counts)()
    db._run(fn, byref(out))
    try:
        c = out.contents
        return {
            c.items[i].key.decode("utf-8", "replace"): c.items[i].count for i in range(c.count)
        }
    finally:
        lib.mae_counts_free(out)


def _rows(db: Db, cls: Any, list_type: Any, free: Any, fn: Any, *args: Any) -> List[Any]:
    out = POINTER(list_type)()
    db._run(fn, *args, byref(out))
    try:
        lst = out.contents
        return [from_c(cls, lst.rows[i]) for i in range(lst.count)]
    finally:
        free(out)


def _row(db: Db, cls: Any, row_type: Any, free: Any, fn: Any, key: int) -> Any:
    out = POINTER(row_type)()
    db._run(fn, key, byref(out))
    try:
        return from_c(cls, out.contents)
    finally:
        free(out)


def _outcome(db: Db, fn: Any, *args: Any) -> RetryOutcome:
    o = L.RetryOutcome()
    db._run(fn, *args, byref(o))
    return from_c(RetryOutcome, o)


def _id(value: Any, name: str = "internal_id") -> int:
    return int64(value, name)


class SyncStore:
    """The sync store (email_metadata): one row per mail, its Notion sync
    state and retries. Writes publish email.* events after commit."""

    def __init__(self, db: Db) -> None:
        self._db = db

    def upsert(self, mail: Optional[Email] = None, **fields: Any) -> None:
        """Adds a mail (status 'pending') or updates the metadata of an
        existing one, leaving its sync state alone. No event. Give an Email
        or its fields as keywords. A message_id already used by another
        mail is DatabaseError (UNIQUE)."""
        if mail is None:
            mail = Email(**fields)
        elif fields:
            raise TypeError("give an Email or keyword fields, not both")
        if not isinstance(mail, Email):
            raise TypeError(f"mail must be an Email, not {type(mail).__name__}")
        e = L.Email()
        e.internal_id = _id(mail.internal_id)
        for name, _ in L.Email._fields_[1:]:
            setattr(e, name, text(getattr(mail, name), name))
        self._db._run(lib.mae_sync_store_upsert, byref(e))

    def mark_synced(
        self,
        internal_id: int,
        notion_page_id: str,
        notion_thread_id: Optional[str] = None,
        source: Optional[str] = None,
    ) -> None:
        """'synced' with its Notion page; event email.synced with `source`
        (None = "sync_store"). NotFound for an unknown mail."""
        self._db._run(
            lib.mae_sync_store_mark_synced,
            _id(internal_id),
            text(notion_page_id, "notion_page_id"),
            text(notion_thread_id, "notion_thread_id"),
            text(source, "source"),
        )

    def mark_failed(self, internal_id: int, status: str, error: str) -> RetryOutcome:
        """Counts a failure with status "fetch_failed" or "failed": schedules
        the retry (email.failed) or, at the limit, dead-letters the mail
        (email.dead_letter)."""
        return _outcome(
            self._db,
            lib.mae_sync_store_mark_failed,
            _id(internal_id),
            text(status, "status"),
            text(error, "error"),
        )

    def get(self, internal_id: int) -> EmailRow:
        """One mail; NotFound when absent."""
        return _row(
            self._db, EmailRow, L.EmailRow, lib.mae_email_row_free,
            lib.mae_sync_store_get, _id(internal_id),
        )

    def list(self, status: Optional[str] = None, limit: int = 0) -> List[EmailRow]:
        """Mails with `status` (None = any), newest first, at most `limit`
        (<= 0: 50)."""
        return _rows(
            self._db, EmailRow, L.EmailList, lib.mae_email_list_free,
            lib.mae_sync_store_list, text(status, "status"), c_int(limit, "limit"),
        )

    def due_for_retry(self, now: float = 0, limit: int = 0) -> List[EmailRow]:
        """Failed mails whose retry is due at `now` (<= 0: the store's
        clock), oldest due first, at most `limit` (<= 0: 50)."""
        return _rows(
            self._db, EmailRow, L.EmailList, lib.mae_email_list_free,
            lib.mae_sync_store_due_for_retry, real(now, "now"), c_int(limit, "limit"),
        )

    def count_by_status(self) -> Dict[str, int]:
        """Mails per sync_status."""
        return _counts(self._db, lib.mae_sync_store_count_by_status)


class Outbox:
    """The outbox repository (email_outbox): intents to change Mail.app or
    Notion, with their state machine. Writes publish outbox.* events."""

    def __init__(self, db: Db) -> None:
        self._db = db

    def enqueue(
        self,
        internal_id: int,
        op_type: str,
        target: str,
        payload: JsonObject,
        source: Optional[str] = None,
    ) -> Enqueued:
        """Enqueues "make `target` ("mailapp" or "notion") look like
        `payload`" (a dict, or JSON object text) for a mail.

        Returns Enqueued: inserted (event outbox.enqueued), merged into the
        pending twin (inserted False, its id, no event), or skipped by echo
        prevention (source "notion_webhook" with target "notion": result
        SKIPPED, outbox_id -1, nothing written). InvalidArgument for a bad
        target, op_type or payload; NotFound for an unknown mail."""
        oid = c_int64(-1)
        ins = c_bool(False)
        rc = self._db._run(
            lib.mae_outbox_enqueue,
            _id(internal_id),
            text(op_type, "op_type"),
            text(target, "target"),
            json_object(payload, "payload"),
            text(source, "source"),
            byref(oid),
            byref(ins),
        )
        result = Result(rc)
        return Enqueued(result, oid.value, bool(ins.value) and result == Result.OK)

    def mark_processing(self, outbox_id: int) -> Result:
        """pending|failed -> processing; SKIPPED when already processing.
        No event. InvalidState from other statuses."""
        return Result(self._db._run(lib.mae_outbox_mark_processing, _id(outbox_id, "outbox_id")))

    def mark_done(self, outbox_id: int) -> Result:
        """-> done, event outbox.done; SKIPPED (no event) when already done.
        InvalidState on a dead letter."""
        return Result(self._db._run(lib.mae_outbox_mark_done, _id(outbox_id, "outbox_id")))

    def mark_failed(self, outbox_id: int, error: str) -> RetryOutcome:
        """Counts an attempt: failed with a retry time (outbox.failed) or,
        at the limit, dead_letter (outbox.dead_letter)."""
        return _outcome(
            self._db, lib.mae_outbox_mark_failed, _id(outbox_id, "outbox_id"), text(error, "error")
        )

    def retry_dead_letter(self, outbox_id: int) -> None:
        """dead_letter -> pending with 0 attempts; no event."""
        self._db._run(lib.mae_outbox_retry_dead_letter, _id(outbox_id, "outbox_id"))

    def get(self, outbox_id: int) -> OutboxRow:
        """One intent; NotFound when absent."""
        return _row(
            self._db, OutboxRow, L.OutboxRow, lib.mae_outbox_row_free,
            lib.mae_outbox_get, _id(outbox_id, "outbox_id"),
        )

    def poll_ready(self, target: Optional[str] = None, limit: int = 0) -> List[OutboxRow]:
        """Intents ready to run (pending, or failed and due), oldest first;
        target None = both; limit <= 0: 20."""
        return _rows(
            self._db, OutboxRow, L.OutboxList, lib.mae_outbox_list_free,
            lib.mae_outbox_poll_ready, text(target, "target"), c_int(limit, "limit"),
        )

    def list_for_email(self, internal_id: int) -> List[OutboxRow]:
        """The intents of one mail, oldest first."""
        return _rows(
            self._db, OutboxRow, L.OutboxList, lib.mae_outbox_list_free,
            lib.mae_outbox_list_for_email, _id(internal_id),
        )

    def list_dead_letters(self, limit: int = 0) -> List[OutboxRow]:
        """Dead letters, newest first; limit <= 0: 100."""
        return _rows(
            self._db, OutboxRow, L.OutboxList, lib.mae_outbox_list_free,
            lib.mae_outbox_list_dead_letters, c_int(limit, "limit"),
        )

    def queue_depth(self) -> QueueDepth:
        """Counts by status, by target, and pending ages."""
        d = L.OutboxDepth()
        self._db._run(lib.mae_outbox_queue_depth, byref(d))
        return from_c(QueueDepth, d)


class LlmStore:
    """The LLM processing store (llm_processing): the outcome of each mail's
    LLM run, token use and retries. Writes publish llm.* events."""

    def __init__(self, db: Db) -> None:
        self._db = db

    def mark_pending(
        self, internal_id: int, notion_page_id: Optional[str] = None, mailbox: Optional[str] = None
    ) -> None:
        """Upserts the row as 'pending' (its retry count is kept). No event."""
        self._db._run(
            lib.mae_llm_store_mark_pending,
            _id(internal_id),
            text(notion_page_id, "notion_page_id"),
            text(mailbox, "mailbox"),
        )

    def mark_success(
        self,
        internal_id: int,
        notion_page_id: Optional[str] = None,
        *,
        model: str,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cache_read_input_tokens: int = 0,
        cache_creation_input_tokens: int = 0,
        latency_ms: int = 0,
        labels: Optional[JsonObject] = None,
    ) -> None:
        """'success' with its usage, retries and errors reset; event
        llm.success. labels: a dict or JSON object text (long string values
        are cut to 500 code points)."""
        u = L.LlmUsage()
        u.model = text(model, "model")
        for name, value in (
            ("input_tokens", input_tokens),
            ("output_tokens", output_tokens),
            ("cache_read_input_tokens", cache_read_input_tokens),
            ("cache_creation_input_tokens", cache_creation_input_tokens),
            ("latency_ms", latency_ms),
        ):
            setattr(u, name, int64(value, name))
        u.labels_json = json_object(labels, "labels")
        self._db._run(
            lib.mae_llm_store_mark_success,
            _id(internal_id),
            text(notion_page_id, "notion_page_id"),
            byref(u),
        )

    def mark_failed(self, internal_id: int, error: str) -> RetryOutcome:
        """Counts a failure: 'failed' with a retry time (llm.failed) or, at
        the limit, 'gave_up' (llm.gave_up)."""
        return _outcome(
            self._db, lib.mae_llm_store_mark_failed, _id(internal_id), text(error, "error")
        )

    def reset_stale_pending(self, older_than_s: float = 0) -> int:
        """Rows left 'pending' longer than older_than_s (<= 0: 300) become
        'failed', due now. No event. Returns how many."""
        n = c_int64(0)
        self._db._run(
            lib.mae_llm_store_reset_stale_pending, real(older_than_s, "older_than_s"), byref(n)
        )
        return n.value

    def get(self, internal_id: int) -> LlmRow:
        """One row; NotFound when absent."""
        return _row(
            self._db, LlmRow, L.LlmRow, lib.mae_llm_row_free,
            lib.mae_llm_store_get, _id(internal_id),
        )

    def due_for_retry(self, now: float = 0, limit: int = 0) -> List[LlmRow]:
        """'failed' rows due at `now` (<= 0: the store's clock)."""
        return _rows(
            self._db, LlmRow, L.LlmList, lib.mae_llm_list_free,
            lib.mae_llm_store_due_for_retry, real(now, "now"), c_int(limit, "limit"),
        )

    def count_by_status(self) -> Dict[str, int]:
        """Rows per status."""
        return _counts(self._db, lib.mae_llm_store_count_by_status)

    def totals(self) -> LlmTotals:
        """Token totals and latency mean/p95 of the successes."""
        t = L.LlmTotals()
        self._db._run(lib.mae_llm_store_totals, byref(t))
        return from_c(LlmTotals, t)
