"""Many threads at once, use after close from other threads, and fork():
nothing crashes the interpreter and the counters add up."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any, List

import pytest

import mailagent_events as mae
from mailagent_events import Db, Publisher

THREADS = 8
PER_THREAD = 2000


def test_threads_publishing_at_once(publisher: Publisher, subscriber: Any) -> None:
    start = threading.Barrier(THREADS)
    errors: List[BaseException] = []

    def work(t: int) -> None:
        try:
            start.wait()
            for i in range(PER_THREAD):
                iid = t * PER_THREAD + i + 1
                if i % 2:
                    publisher.publish("x.y", iid, {"t": t, "i": i}, "cli")
                else:
                    publisher.publish_outbox_done(iid, i + 1)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert publisher.flush(20000)
    total = THREADS * PER_THREAD
    got = subscriber.take(total, timeout=30)
    assert len(got) == total
    st = publisher.stats()
    assert st["calls"] == total and st["enqueued"] == total and st["published"] == total
    assert st["queued"] == 0 and st["in_flight"] == 0 and st["dropped_queue_full"] == 0
    # Every event arrived whole: one JSON object per message, none twice.
    ids = [json.loads(m)["internal_id"] for m in got]
    assert len(set(ids)) == total


def test_close_while_other_threads_publish(redis_server: Any, channel: str) -> None:
    p = Publisher(redis_server.url, channel=channel)
    stop = threading.Event()
    done_calls = [0] * THREADS
    closed_seen = [0] * THREADS

    def work(t: int) -> None:
        while not stop.is_set():
            try:
                p.publish("x.y", t, None, "cli")
                done_calls[t] += 1
            except mae.Closed:
                closed_seen[t] += 1
                return

    threads = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    while sum(done_calls) < 2000:
        pass
    before = p.stats()
    p.close(5000)
    stop.set()
    for th in threads:
        th.join()
    assert all(closed_seen)  # every thread ran into the closed handle, none crashed
    assert before["calls"] <= sum(done_calls)
    with pytest.raises(mae.Closed):
        p.stats()


def test_one_db_from_many_threads(db: Db) -> None:
    errors: List[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(50):
                iid = t * 1000 + i + 1
                db.sync_store.upsert(internal_id=iid, message_id=f"<{iid}>")
                db.sync_store.mark_synced(iid, f"p{iid}")
                db.sync_store.get(iid)
        except BaseException as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert db.sync_store.count_by_status() == {"synced": 200}


def _in_child(fn: Any) -> dict:
    """Runs fn() in a forked child; returns what it reported through a pipe."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        try:
            out = {"ok": True, **fn()}
        except BaseException as e:
            out = {"ok": False, "error": repr(e)}
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    return json.loads(data)


def test_fork_child_calls_are_harmless_no_ops(publisher: Publisher, subscriber: Any,
                                             db: Db) -> None:
    publisher.publish("parent.before", 1, None, "cli")
    assert publisher.flush(5000)

    def child() -> dict:
        publisher.publish("child.event", 2, {"from": "child"}, "cli")
        publisher.publish_outbox_done(2, 3)
        st = publisher.stats()
        try:
            db.sync_store.get(1)
            db_error = ""
        except mae.Closed as e:
            db_error = str(e)
        db.close()  # abandoned, not closed: the connection is the parent's
        flushed = publisher.flush(1000)
        return {"stats": st, "db_error": db_error, "flushed": flushed,
                "closed": publisher.close(1000)}

    out = _in_child(child)
    assert out["ok"], out
    assert out["stats"]["dropped_disabled"] >= 2
    assert "fork" in out["db_error"]
    assert out["flushed"] is True and out["closed"] is True
    # The parent's publisher and Db are untouched.
    publisher.publish("parent.after", 3, None, "cli")
    assert publisher.flush(5000)
    assert [e["event_type"] for e in subscriber.events(2)] == ["parent.before", "parent.after"]
    assert subscriber.quiet() == []  # nothing from the child
    db.sync_store.upsert(internal_id=1, message_id="<1>")
    assert db.sync_store.get(1).internal_id == 1


def test_fork_while_another_thread_publishes(publisher: Publisher) -> None:
    """A thread inside a publish call when fork() happens leaves the child
    able to publish and close (no lock left held)."""
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            publisher.publish("x.y", 1, None, "cli")

    th = threading.Thread(target=spin)
    th.start()
    try:
        outs = [_in_child(lambda: {"closed": (publisher.publish("c", 1, None, "cli"),
                                              publisher.close(500))[1]}) for _ in range(5)]
    finally:
        stop.set()
        th.join()
    # close returns (False when the parent's queue copy held events it
    # could not send from the child); the child exits normally.
    assert all(o["ok"] and o["closed"] in (True, False) for o in outs), outs
    assert publisher.flush(5000)


def test_child_opens_its_own_db(tmpdir_path: Path) -> None:
    path = tmpdir_path / "f.db"
    with Db(path) as db:
        db.sync_store.upsert(internal_id=1, message_id="<1>")

        def child() -> dict:
            with Db(path) as mine:
                mine.sync_store.mark_synced(1, "from-child")
            return {}

        assert _in_child(child)["ok"]
        assert db.sync_store.get(1).notion_page_id == "from-child"
