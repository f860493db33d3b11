#!/usr/bin/env python3
"""A small sync watcher in Python: the C demo's day of mail, driven through
this package exactly as the mail-sync system would use it.

Each mail is upserted, run through the LLM, synced to Notion (every 7th
fetch fails once first), and gets two outbox intents (Mail.app and Notion)
that a worker marks done (every 5th Notion intent fails once first). Every
10th mail is also flagged by a user: a transaction with the watcher's own
SQL and the intent it implies. The stores run on a simulated clock so the
retries fall due at once. At the end it prints the reconciliation reads and,
as its last line, one JSON object: the events it expects on the stream by
type, and the publisher's counters.

    MAILAGENT_REDIS_URL=redis://127.0.0.1:6379 python3 watcher.py --mails 50 --db mail.db
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
from typing import Counter

from mailagent_events import (
    SOURCE_CLI,
    SOURCE_NEW_WATCHER,
    Db,
    Email,
    Publisher,
    default_publisher,
)


class SimClock:
    """Simulated epoch seconds: a day ago, advanced by hand."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def run(db: Db, clock: SimClock, mails: int) -> Counter[str]:
    expect: Counter[str] = collections.Counter()
    for i in range(1, mails + 1):
        iid = 50_000 + i
        clock.now += 60
        db.sync_store.upsert(Email(internal_id=iid, message_id=f"<{iid}@example.com>",
                                   subject=f"Mail {i} — déjà vu", sender="a@example.com",
                                   mailbox="INBOX", date_received=f"2024-05-19T{i % 24:02}:00"))
        db.llm_store.mark_pending(iid, None, "INBOX")
        db.llm_store.mark_success(iid, model="claude-demo", input_tokens=1000 + i,
                                  output_tokens=50, latency_ms=800 + i, labels={"kind": "note"})
        expect["llm.success"] += 1
        if i % 7 == 0:
            db.sync_store.mark_failed(iid, "fetch_failed", "IMAP: connection reset")
            expect["email.failed"] += 1
            clock.now += 61
            assert [r.internal_id for r in db.sync_store.due_for_retry()] == [iid]
        db.sync_store.mark_synced(iid, f"page-{iid}", None, SOURCE_NEW_WATCHER)
        expect["email.synced"] += 1
        for target in ("mailapp", "notion"):
            db.outbox.enqueue(iid, "sync_labels", target, {"labels": ["note"]}, SOURCE_NEW_WATCHER)
            expect["outbox.enqueued"] += 1
        if i % 10 == 0:  # a user flags the mail: own SQL and the intent, atomically
            with db.transaction():
                db.execute("UPDATE email_metadata SET is_flagged = 1 WHERE internal_id = ?", [iid])
                db.outbox.enqueue(iid, "flag", "notion", {"flagged": True}, SOURCE_CLI)
            expect["outbox.enqueued"] += 1
        # The outbox worker.
        for intent in db.outbox.poll_ready(limit=100):
            db.outbox.mark_processing(intent.outbox_id)
            if intent.target == "notion" and intent.outbox_id % 5 == 0 and intent.attempts == 0:
                db.outbox.mark_failed(intent.outbox_id, "Notion 429: rate limited")
                expect["outbox.failed"] += 1
            else:
                db.outbox.mark_done(intent.outbox_id)
                expect["outbox.done"] += 1
    # Drain the retries.
    while True:
        clock.now += 300
        ready = db.outbox.poll_ready(limit=100)
        if not ready:
            break
        for intent in ready:
            db.outbox.mark_processing(intent.outbox_id)
            db.outbox.mark_done(intent.outbox_id)
            expect["outbox.done"] += 1
    return expect


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mails", type=int, default=50)
    ap.add_argument("--db", default=os.environ.get("MAILAGENT_DB", "mail.db"))
    args = ap.parse_args()
    # MAILAGENT_REDIS_URL (else REDIS_URL + REDIS_DB), MAILAGENT_CHANNEL
    pub: Publisher = default_publisher()
    clock = SimClock(1_716_096_000.0 - 86_400)
    with Db(args.db, publisher=pub, clock=clock) as db:
        expect = run(db, clock, args.mails)
        print("mails by status:", db.sync_store.count_by_status())
        depth = db.outbox.queue_depth()
        print(f"outbox: pending {depth.pending}, done {depth.done}, failed {depth.failed}, "
              f"dead letters {depth.dead_letter}")
        t = db.llm_store.totals()
        print(f"llm: {t.successes} successes, {t.input_tokens} input tokens, "
              f"p95 latency {t.latency_p95_ms:.0f} ms")
    flushed = pub.flush(10_000)
    st = pub.stats()
    print(f"publisher: {st['published']} of {st['calls']} published"
          + ("" if flushed else " (flush timed out)"))
    print(json.dumps({"expect": dict(sorted(expect.items())), "stats": st}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
