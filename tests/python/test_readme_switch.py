"""README.md's one-import switch runs as written: its first block replaces
MailAgent's publisher module, its second is MailAgent's calls, unchanged,
and a real subscriber receives what they publish."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Any

from conftest import LIB, PKG_SRC, ROOT, Subscriber


def test_top_readme_switch_publishes(redis_server: Any, channel: str) -> None:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## From Python"):]
    module, calls = re.findall(r"```python\n(.*?)```", section, re.S)[:2]
    assert "from mailagent_events import *" in module
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILAGENT_")}
    env.update({"MAILAGENT_EVENTS_LIB": str(LIB), "PYTHONPATH": str(PKG_SRC),
                "REDIS_URL": redis_server.url, "MAILAGENT_CHANNEL": channel})
    sub = Subscriber(redis_server, channel)
    try:
        r = subprocess.run([sys.executable, "-c", module + calls], env=env,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and r.stderr == "", r.stderr
        got = [json.loads(m) for m in sub.take(3)]
        assert [e["event_type"] for e in got] == ["email.new", "outbox.failed", "email.synced"]
        assert got[1]["data"] == {"outbox_id": 17} and got[1]["source"] == "outbox"
        assert got[2]["internal_id"] == 53675 and got[2]["source"] == "mailagent"
    finally:
        sub.close()
