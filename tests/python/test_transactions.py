"""Caller-owned transactions: events wait for the commit and go out in
order after it; a rollback (or an exception in the with-block) discards
them with the writes; the caller's own SQL shares the transaction."""

from __future__ import annotations

from typing import Any

import pytest

import mailagent_events as mae
from mailagent_events import Db


def setup_mail(db: Db) -> None:
    db.sync_store.upsert(internal_id=53675, message_id="<53675@example.com>")


def test_commit_publishes_held_events_in_order(db: Db, publisher: Any, subscriber: Any) -> None:
    setup_mail(db)
    with db.transaction():
        assert db.in_transaction
        db.execute("UPDATE email_metadata SET is_read = 1 WHERE internal_id = ?", [53675])
        oid = db.outbox.enqueue(53675, "mark_read", "notion", {"read": True}, "cli").outbox_id
        db.sync_store.mark_synced(53675, "page-1")
        # Published directly, not held: it reaches Redis before the commit.
        publisher.publish("marker.before_commit", None, None, "cli")
        assert publisher.flush(5000)
        assert [e["event_type"] for e in subscriber.events(1)] == ["marker.before_commit"]
        assert subscriber.quiet() == []
    assert not db.in_transaction
    got = subscriber.events(2)
    assert [e["event_type"] for e in got] == ["outbox.enqueued", "email.synced"]
    assert got[0]["data"]["outbox_id"] == oid
    row = db.sync_store.get(53675)
    assert row.is_read and row.sync_status == "synced"


def test_rollback_discards_writes_and_events(db: Db, subscriber: Any) -> None:
    setup_mail(db)
    db.begin()
    db.execute("UPDATE email_metadata SET is_flagged = 1 WHERE internal_id = ?", [53675])
    db.sync_store.mark_synced(53675, "page-1")
    db.outbox.enqueue(53675, "flag", "notion", {"flagged": True}, "cli")
    db.rollback()
    row = db.sync_store.get(53675)
    assert (row.is_flagged, row.sync_status) == (False, "pending")
    assert db.outbox.list_for_email(53675) == []
    assert subscriber.quiet(0.5) == []


def test_exception_in_block_rolls_back_and_propagates(db: Db, subscriber: Any) -> None:
    setup_mail(db)

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with db.transaction():
            db.sync_store.mark_synced(53675, "page-1")
            raise Boom()
    assert not db.in_transaction
    assert db.sync_store.get(53675).sync_status == "pending"
    assert subscriber.quiet(0.5) == []
    # A store error inside the block rolls back the earlier writes too.
    with pytest.raises(mae.NotFound):
        with db.transaction():
            db.sync_store.mark_synced(53675, "page-1")
            db.sync_store.mark_synced(99, "page-x")
    assert db.sync_store.get(53675).sync_status == "pending"
    assert subscriber.quiet(0.5) == []


def test_misuse_raises_with_the_library_message(db: Db) -> None:
    with pytest.raises(mae.InvalidArgument, match="mae_db_commit: no transaction is open") as e:
        db.commit()
    assert e.value.code == -1 and e.value.message == str(e.value)
    db.begin()
    with pytest.raises(mae.InvalidArgument, match="a transaction is already open"):
        db.begin()
    db.rollback()
    with pytest.raises(mae.InvalidArgument, match="mae_db_rollback: no transaction is open"):
        db.rollback()


def test_execute_reports_sql_errors(db: Db) -> None:
    assert db.execute("SELECT ?, ?, ?, ?, ?", [None, 1, 2.5, "é", b"\x00\x01"]) == [
        (None, 1, 2.5, "é", b"\x00\x01")]
    with pytest.raises(mae.DatabaseError, match="no such table"):
        db.execute("SELECT * FROM nope")
    with pytest.raises(mae.InvalidArgument, match="one statement"):
        db.execute("SELECT 1; SELECT 2")
    with pytest.raises(mae.InvalidArgument, match="parameters"):
        db.execute("SELECT ?", [])
    with pytest.raises(TypeError):
        db.execute("SELECT ?", [object()])


def test_close_inside_a_transaction_discards_its_events(publisher: Any, subscriber: Any,
                                                         tmpdir_path: Any) -> None:
    db = Db(tmpdir_path / "t.db", publisher=publisher)
    setup_mail(db)
    db.begin()
    db.sync_store.mark_synced(53675, "page-1")
    db.close()
    assert subscriber.quiet(0.5) == []
    with Db(tmpdir_path / "t.db") as again:
        assert again.sync_store.get(53675).sync_status == "pending"
