"""The Python example watcher (bindings/python/examples/watcher.py) runs a
small day of mail against a real redis-server, and the stream a subscriber
saw agrees with what it says it published and with the database."""

from __future__ import annotations

import collections
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import LIB, PKG_SRC, ROOT, Subscriber

EXAMPLE = ROOT / "bindings" / "python" / "examples" / "watcher.py"


def test_example_watcher_agrees_with_the_stream(redis_server: Any, channel: str,
                                                tmpdir_path: Path) -> None:
    sub = Subscriber(redis_server, channel)
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILAGENT_")}
        env.update({"MAILAGENT_EVENTS_LIB": str(LIB), "PYTHONPATH": str(PKG_SRC),
                    "MAILAGENT_REDIS_URL": redis_server.url, "MAILAGENT_CHANNEL": channel})
        db = tmpdir_path / "demo.db"
        r = subprocess.run([sys.executable, str(EXAMPLE), "--mails", "40", "--db", str(db)],
                           env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        report = json.loads(r.stdout.splitlines()[-1])
        expect = report["expect"]
        total = sum(expect.values())
        assert report["stats"]["published"] == total == report["stats"]["calls"]
        events = sub.events(total, timeout=20)
        assert len(events) == total and sub.quiet() == []
        seen = collections.Counter(e["event_type"] for e in events)
        assert dict(seen) == expect
        with sqlite3.connect(db) as c:
            synced = c.execute("SELECT COUNT(*) FROM email_metadata WHERE sync_status='synced'")
            assert synced.fetchone()[0] == seen["email.synced"] == 40
            flagged = c.execute("SELECT COUNT(*) FROM email_metadata WHERE is_flagged = 1")
            assert flagged.fetchone()[0] == 4
            done = c.execute("SELECT COUNT(*) FROM email_outbox WHERE status='done'")
            assert done.fetchone()[0] == seen["outbox.done"] == seen["outbox.enqueued"]
    finally:
        sub.close()
