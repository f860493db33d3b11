"""The examples of bindings/python/README.md run as written (against this
suite's own redis-server instead of the address they show)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, List

from conftest import ROOT

README = ROOT / "bindings" / "python" / "README.md"


def blocks() -> List[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_examples_run(redis_server: Any, subscriber: Any, tmp_path: Path) -> None:
    code = blocks()
    assert len(code) == 3
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        switch, publisher, stores = code
        ns: dict = {"__name__": "readme"}
        exec(publisher.replace("redis://127.0.0.1:6379", redis_server.url)
             .replace("mailagent:events:v1", subscriber.channel), ns)
        exec("from mailagent_events import Publisher\n"
             f"url = {redis_server.url!r}\n" + stores, ns)
        exec(switch, ns)  # no MAILAGENT_REDIS_URL here: a disabled publisher
    finally:
        os.chdir(cwd)
    got = [e["event_type"] for e in subscriber.events(2)]
    assert got == ["email.synced", "outbox.enqueued"]
    assert (tmp_path / "mail.db").exists()
