"""Every store operation through Python: the rows it leaves, its return
value, and the event a real subscriber receives (or that none is sent)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import mailagent_events as mae
from mailagent_events import Db, Email

NOW = 1_716_096_000.0
SCHEDULE = [60, 300, 900, 3600, 7200]


def add_mail(db: Db, iid: int = 53675, **kw: Any) -> None:
    db.sync_store.upsert(Email(internal_id=iid, message_id=f"<{iid}@example.com>", **kw))


# ---- sync store -------------------------------------------------------------

def test_upsert_and_get_round_trip_without_event(db: Db, subscriber: Any) -> None:
    add_mail(db, subject="Réunion ☃", sender="a@example.com", sender_name="Ann",
             to_addr="b@example.com", cc_addr=None, date_received="2024-05-19T10:00:00",
             mailbox="INBOX", thread_id="t-1")
    row = db.sync_store.get(53675)
    assert isinstance(row, mae.EmailRow)
    assert (row.internal_id, row.message_id, row.subject, row.sender_name, row.mailbox) == (
        53675, "<53675@example.com>", "Réunion ☃", "Ann", "INBOX")
    assert row.cc_addr is None and row.sync_status == "pending" and row.retry_count == 0
    assert row.created_at == NOW and row.updated_at == NOW and row.next_retry_at == 0.0
    # The same id again updates the metadata, keyword form.
    db.sync_store.upsert(internal_id=53675, message_id="<53675@example.com>", subject="New")
    assert db.sync_store.get(53675).subject == "New"
    assert subscriber.quiet() == []


def test_mark_synced_publishes_email_synced(db: Db, subscriber: Any) -> None:
    add_mail(db)
    db.sync_store.mark_synced(53675, "page-uuid-abc", "thread-page", mae.SOURCE_NEW_WATCHER)
    db.sync_store.mark_synced(53675, "page-2")  # source None = "sync_store"
    a, b = subscriber.events(2)
    assert a["event_type"] == "email.synced" and a["internal_id"] == 53675
    assert a["data"] == {"notion_page_id": "page-uuid-abc"} and a["source"] == "new_watcher"
    assert b["data"] == {"notion_page_id": "page-2"} and b["source"] == "sync_store"
    row = db.sync_store.get(53675)
    assert (row.sync_status, row.notion_page_id, row.notion_thread_id) == (
        "synced", "page-2", "thread-page")


def test_mark_failed_retries_then_dead_letters(db: Db, subscriber: Any, clock: Any) -> None:
    add_mail(db)
    for n in range(1, 5):
        out = db.sync_store.mark_failed(53675, "fetch_failed", f"imap timeout {n}")
        assert out == mae.RetryOutcome(n, NOW + SCHEDULE[n - 1], False)
    last = db.sync_store.mark_failed(53675, "failed", "still down")
    assert last == mae.RetryOutcome(5, 0.0, True)
    events = subscriber.events(5)
    assert [e["event_type"] for e in events] == ["email.failed"] * 4 + ["email.dead_letter"]
    assert events[0]["data"] == {"status": "fetch_failed", "retry_count": 1,
                                 "next_retry_at": NOW + 60, "error": "imap timeout 1"}
    assert events[4]["data"] == {"retry_count": 5, "error": "still down"}
    assert all(e["source"] == "sync_store" for e in events)
    row = db.sync_store.get(53675)
    assert row.sync_status == "dead_letter" and row.sync_error == "Max retries exceeded: still down"


def test_sync_store_reads(db: Db, clock: Any) -> None:
    for iid, day in ((1, "2024-05-01"), (2, "2024-05-03"), (3, "2024-05-02")):
        add_mail(db, iid, date_received=day)
    db.sync_store.mark_synced(1, "p1")
    db.sync_store.mark_failed(2, "failed", "e")
    assert [r.internal_id for r in db.sync_store.list()] == [2, 3, 1]  # newest first
    assert [r.internal_id for r in db.sync_store.list("pending")] == [3]
    assert [r.internal_id for r in db.sync_store.list(limit=1)] == [2]
    assert db.sync_store.due_for_retry() == []
    assert [r.internal_id for r in db.sync_store.due_for_retry(now=NOW + 60)] == [2]
    clock.now = NOW + 61
    assert [r.internal_id for r in db.sync_store.due_for_retry()] == [2]
    assert db.sync_store.count_by_status() == {"failed": 1, "pending": 1, "synced": 1}


def test_sync_store_errors_carry_the_library_message(db: Db, subscriber: Any) -> None:
    with pytest.raises(mae.NotFound) as e:
        db.sync_store.mark_synced(99, "p")
    assert "no mail with id 99" in str(e.value) and e.value.code == -3
    with pytest.raises(mae.NotFound):
        db.sync_store.get(99)
    add_mail(db)
    with pytest.raises(mae.InvalidArgument) as e:
        db.sync_store.mark_failed(53675, "bogus", "e")
    assert "status" in str(e.value)
    with pytest.raises(mae.InvalidArgument, match="notion_page_id"):
        db.sync_store.mark_synced(53675, "")
    with pytest.raises(mae.InvalidArgument):
        db.sync_store.mark_synced(0, "p")  # ids are > 0
    add_mail(db, 2)
    with pytest.raises(mae.DatabaseError, match="UNIQUE"):
        db.sync_store.upsert(internal_id=3, message_id="<2@example.com>")
    with pytest.raises(TypeError):
        db.sync_store.mark_synced("53675", "p")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        db.sync_store.upsert(Email(1, "<x>"), subject="both")
    assert subscriber.quiet() == []  # failures publish nothing


# ---- outbox -----------------------------------------------------------------

def test_enqueue_insert_merge_and_echo_prevention(db: Db, subscriber: Any) -> None:
    add_mail(db)
    first = db.outbox.enqueue(53675, "flag", "notion", {"b": 1, "a": {"y": 1}}, "cli")
    assert first.result == mae.OK and first.inserted and first.outbox_id > 0 and not first.skipped
    merged = db.outbox.enqueue(53675, "flag", "notion", '{"a": {"z": 2}, "c": null}', "ai_reviewed_handler")
    assert merged == mae.Enqueued(mae.OK, first.outbox_id, False)
    echo = db.outbox.enqueue(53675, "flag", "notion", {"x": 1}, mae.SOURCE_NOTION_WEBHOOK)
    assert echo == mae.Enqueued(mae.SKIPPED, -1, False) and echo.skipped
    row = db.outbox.get(first.outbox_id)
    assert row.payload_json == '{"a":{"y":1,"z":2},"b":1}'  # RFC 7396, compact, sorted
    assert row.payload == {"a": {"y": 1, "z": 2}, "b": 1}
    assert (row.source, row.status, row.attempts) == ("ai_reviewed_handler", "pending", 0)
    events = subscriber.events(1)
    assert events[0]["event_type"] == "outbox.enqueued" and events[0]["source"] == "outbox"
    assert events[0]["data"] == {"outbox_id": first.outbox_id, "op_type": "flag",
                                 "target": "notion", "source": "cli"}
    assert subscriber.quiet() == []  # merge and echo published nothing


def test_enqueue_rejects_bad_arguments(db: Db) -> None:
    add_mail(db)
    with pytest.raises(mae.InvalidArgument, match="target"):
        db.outbox.enqueue(53675, "flag", "slack", {}, "cli")
    with pytest.raises(mae.InvalidArgument, match="op_type"):
        db.outbox.enqueue(53675, "", "notion", {}, "cli")
    with pytest.raises(mae.InvalidArgument, match="payload"):
        db.outbox.enqueue(53675, "flag", "notion", "[1]", "cli")
    with pytest.raises(mae.NotFound):
        db.outbox.enqueue(4242, "flag", "notion", {}, "cli")
    with pytest.raises(TypeError):
        db.outbox.enqueue(53675, "flag", "notion", {"d": {1, 2}}, "cli")


def test_outbox_state_machine_and_events(db: Db, subscriber: Any, clock: Any) -> None:
    add_mail(db)
    oid = db.outbox.enqueue(53675, "flag", "mailapp", {"flagged": True}, "cli").outbox_id
    assert db.outbox.mark_processing(oid) == mae.OK
    assert db.outbox.mark_processing(oid) == mae.SKIPPED
    assert db.outbox.mark_done(oid) == mae.OK
    assert db.outbox.mark_done(oid) == mae.SKIPPED  # no second event
    with pytest.raises(mae.InvalidState):
        db.outbox.mark_failed(oid, "late")
    with pytest.raises(mae.NotFound):
        db.outbox.mark_done(999)
    oid2 = db.outbox.enqueue(53675, "move", "notion", {"to": "Archive"}, "cli").outbox_id
    outcomes = [db.outbox.mark_failed(oid2, f"429 #{n}") for n in range(1, 6)]
    assert outcomes[0] == mae.RetryOutcome(1, NOW + 60, False)
    assert outcomes[-1] == mae.RetryOutcome(5, 0.0, True)
    with pytest.raises(mae.InvalidState):
        db.outbox.mark_done(oid2)  # a dead letter
    assert [r.outbox_id for r in db.outbox.list_dead_letters()] == [oid2]
    db.outbox.retry_dead_letter(oid2)
    row = db.outbox.get(oid2)
    assert (row.status, row.attempts) == ("pending", 0)
    with pytest.raises(mae.InvalidState):
        db.outbox.retry_dead_letter(oid2)
    got = subscriber.events(8)
    assert [e["event_type"] for e in got] == (
        ["outbox.enqueued", "outbox.done", "outbox.enqueued"] + ["outbox.failed"] * 4
        + ["outbox.dead_letter"])
    assert all(e["internal_id"] == 53675 and e["source"] == "outbox" for e in got)
    assert got[1]["data"] == {"outbox_id": oid}
    assert got[3]["data"] == {"outbox_id": oid2, "attempts": 1, "last_error": "429 #1",
                              "next_retry_at": NOW + 60}
    assert got[7]["data"] == {"outbox_id": oid2, "attempts": 5, "last_error": "429 #5"}
    assert subscriber.quiet() == []  # processing, skips and the admin retry: no event


def test_outbox_reads(db: Db, clock: Any) -> None:
    add_mail(db, 1)
    add_mail(db, 2)
    a = db.outbox.enqueue(1, "flag", "mailapp", {}, "cli").outbox_id
    clock.now += 1
    b = db.outbox.enqueue(1, "flag", "notion", {}, "cli").outbox_id
    clock.now += 1
    c = db.outbox.enqueue(2, "read", "notion", {}, None).outbox_id
    db.outbox.mark_processing(b)
    assert [r.outbox_id for r in db.outbox.poll_ready()] == [a, c]
    assert [r.outbox_id for r in db.outbox.poll_ready("notion")] == [c]
    assert [r.outbox_id for r in db.outbox.poll_ready(limit=1)] == [a]
    assert [r.outbox_id for r in db.outbox.list_for_email(1)] == [a, b]
    assert db.outbox.get(c).source is None
    clock.now = NOW + 600  # a is 10 min old, c 9:58
    d = db.outbox.queue_depth()
    assert (d.pending, d.processing, d.done, d.failed, d.dead_letter) == (2, 1, 0, 0, 0)
    assert d.mailapp == mae.TargetDepth(1, 0, 0) and d.notion == mae.TargetDepth(1, 1, 0)
    assert (d.pending_under_1m, d.pending_under_5m, d.pending_under_30m, d.pending_over_30m) == (
        0, 0, 2, 0)
    assert d.oldest_pending_age_s == pytest.approx(600)


# ---- LLM store --------------------------------------------------------------

def test_llm_success_failure_and_reads(db: Db, subscriber: Any, clock: Any) -> None:
    add_mail(db)
    db.llm_store.mark_pending(53675, "page-1", "INBOX")
    db.llm_store.mark_success(53675, model="claude-x", input_tokens=1200, output_tokens=80,
                              cache_read_input_tokens=1000, cache_creation_input_tokens=5,
                              latency_ms=950, labels={"category": "x" * 600, "n": 1})
    row = db.llm_store.get(53675)
    assert (row.status, row.model, row.input_tokens, row.cache_read_input_tokens) == (
        "success", "claude-x", 1200, 1000)
    assert (row.notion_page_id, row.mailbox) == ("page-1", "INBOX")
    assert row.labels == {"category": "x" * 500, "n": 1}  # cut, still valid JSON
    ev = subscriber.events(1)[0]
    assert ev == {**ev, "event_type": "llm.success", "internal_id": 53675, "source": "llm_agent",
                  "data": {"model": "claude-x", "input_tokens": 1200, "output_tokens": 80,
                           "latency_ms": 950}}
    add_mail(db, 2)
    outs = [db.llm_store.mark_failed(2, "529 overloaded") for _ in range(5)]
    assert outs[0] == mae.RetryOutcome(1, NOW + 60, False) and outs[4].terminal
    got = subscriber.events(5)
    assert [e["event_type"] for e in got] == ["llm.failed"] * 4 + ["llm.gave_up"]
    assert got[4]["data"] == {"retry_count": 5, "error": "529 overloaded"}
    assert db.llm_store.count_by_status() == {"gave_up": 1, "success": 1}
    t = db.llm_store.totals()
    assert (t.successes, t.input_tokens, t.output_tokens, t.latency_mean_ms) == (1, 1200, 80, 950)
    with pytest.raises(mae.InvalidArgument):
        db.llm_store.mark_success(53675, model="m", input_tokens=-1)
    with pytest.raises(mae.InvalidArgument, match="labels"):
        db.llm_store.mark_success(53675, model="m", labels="[]")
    with pytest.raises(mae.NotFound):
        db.llm_store.get(4242)


def test_llm_retry_and_stale_pending(db: Db, clock: Any) -> None:
    add_mail(db, 1)
    add_mail(db, 2)
    db.llm_store.mark_failed(1, "e")
    assert db.llm_store.due_for_retry() == []
    assert [r.internal_id for r in db.llm_store.due_for_retry(now=NOW + 60)] == [1]
    db.llm_store.mark_pending(2)
    clock.now = NOW + 301
    assert db.llm_store.reset_stale_pending() == 1
    assert db.llm_store.get(2).status == "failed"
    assert db.llm_store.reset_stale_pending(1000) == 0


# ---- opening ----------------------------------------------------------------

def test_open_errors_carry_the_library_reason(tmpdir_path: Path) -> None:
    junk = tmpdir_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(mae.DatabaseError) as e:
        Db(junk)
    assert str(e.value) and e.value.code == -6
    with pytest.raises(mae.MailagentError):
        Db(tmpdir_path / "missing.db", read_only=True)
    with pytest.raises(mae.InvalidArgument):
        Db("")
    with pytest.raises(TypeError):
        Db(tmpdir_path / "x.db", publisher="redis://")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Db(42)  # type: ignore[arg-type]


def test_state_only_db_and_read_only_reads(tmpdir_path: Path) -> None:
    path = tmpdir_path / "m.db"
    with Db(path) as db:  # no publisher: state only
        add_mail(db)
        db.sync_store.mark_synced(53675, "p")
    with Db(path, read_only=True) as ro:
        assert ro.sync_store.get(53675).sync_status == "synced"
        with pytest.raises(mae.MailagentError):
            ro.sync_store.mark_synced(53675, "q")
    with sqlite3.connect(path) as c:  # the rows are plain SQLite for everyone else
        assert c.execute("SELECT notion_page_id FROM email_metadata").fetchone() == ("p",)


def test_busy_when_another_writer_holds_the_lock(tmpdir_path: Path) -> None:
    path = tmpdir_path / "busy.db"
    with Db(path, busy_timeout_ms=100) as db:
        add_mail(db)
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(mae.Busy) as e:
                db.sync_store.mark_synced(53675, "p")
            assert e.value.code == -5 and str(e.value)
            with pytest.raises(mae.Busy):
                db.begin()
        finally:
            other.execute("ROLLBACK")
            other.close()
        db.sync_store.mark_synced(53675, "p")


def test_closed_db_raises_closed(tmpdir_path: Path) -> None:
    db = Db(tmpdir_path / "c.db")
    db.close()
    assert db.closed
    with pytest.raises(mae.Closed, match="Db is closed"):
        db.sync_store.get(1)
    with pytest.raises(mae.Closed):
        db.execute("SELECT 1")
    db.close()


def test_publisher_cannot_close_under_an_open_db(redis_server: Any, tmpdir_path: Path) -> None:
    p = mae.Publisher(redis_server.url)
    db = Db(tmpdir_path / "p.db", publisher=p)
    with pytest.raises(mae.InvalidArgument, match="still used by 1 open Db"):
        p.close()
    db.sync_store.upsert(internal_id=1, message_id="<1>")  # both still work
    db.close()
    assert p.close() is True
    with pytest.raises(mae.Closed):
        Db(tmpdir_path / "p.db", publisher=p)


def test_json_payload_with_nul_escape_is_rejected(db: Db) -> None:
    add_mail(db)
    with pytest.raises(mae.InvalidArgument):
        db.outbox.enqueue(53675, "flag", "notion", {"x": "a\0b"}, "cli")
    assert json.dumps({"x": "a\0b"}) == '{"x": "a\\u0000b"}'
