"""The drop-in against the real hub (issue 20): `mailagent events serve`
with no Redis URL on a free loopback port, safe_publish in a fresh process
configured only by MAILAGENT_RELAY_URL (or only by SSE_LOCAL_PORT, as
MailAgent's loopback), and readers on the hub's SSE stream: every MailAgent
call form arrives once, in order, each with an id."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest

from conftest import LIB, PKG_SRC, free_port

CLI = Path(os.environ.get("MAILAGENT_CLI", str(LIB.parent / "mailagent")))
NO_REDIS = ("MAILAGENT_REDIS_URL", "REDIS_URL", "REDIS_DB", "MAILAGENT_STREAM",
            "MAILAGENT_RELAY_URL", "MAILAGENT_LOCAL_API_TOKEN", "WEBHOOK_SECRET",
            "MAILAGENT_LOCAL_TOKEN")


def clean_env(**extra: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in NO_REDIS}
    env.update(extra)
    return env


class Hub:
    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / "hub.log"
        self.proc = subprocess.Popen(
            [str(CLI), "events", "serve", "--listen", f"127.0.0.1:{self.port}"],
            env=clean_env(), stdout=subprocess.DEVNULL, stderr=open(self.log, "wb"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            text = self.log.read_text(errors="replace")
            if "listening on" in text:
                break
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        text = self.log.read_text(errors="replace")
        if "hub mode" not in text:
            self.close()
            msg = f"this mailagent has no hub mode: {text.strip()[:200]}"
            if os.environ.get("CI") == "true":
                pytest.fail(msg)
            pytest.skip(msg)

    def health(self) -> dict:
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(b"GET /api/events/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        body = data.split(b"\r\n\r\n", 1)[1]
        if b"Transfer-Encoding: chunked" in data.split(b"\r\n\r\n", 1)[0]:
            out, rest = b"", body
            while rest:
                size, _, rest = rest.partition(b"\r\n")
                n = int(size, 16)
                if n == 0:
                    break
                out, rest = out + rest[:n], rest[n + 2:]
            body = out
        return json.loads(body)

    def wait_readers(self, n: int) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.health().get("subscriber_count") == n:
                return
            time.sleep(0.05)
        raise AssertionError(f"the hub never had {n} readers: {self.health()}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    if not CLI.exists():
        pytest.fail(f"{CLI} is missing: build the command first")
    h = Hub(tmp_path)
    try:
        yield h
    finally:
        h.close()


CALL_FORMS = """
    from mailagent_events import safe_publish, get_publisher, default_publisher
    safe_publish("email.new")
    safe_publish("outbox.failed", data={"outbox_id": 17, "last_error": "é"}, source="outbox")
    safe_publish("email.synced", internal_id=53675, data=None)
    safe_publish("llm.success", internal_id=1, data={"model": "m"}, source="llm_agent")
    safe_publish("email.flag_changed", 2, {"flag": True}, "cli")
    assert get_publisher().publish("job.done", internal_id=3) is False
    assert default_publisher().flush(5000)
    print(default_publisher().stats()["published"])
"""

WANT = [("email.new", None, {}, "mailagent"),
        ("outbox.failed", None, {"outbox_id": 17, "last_error": "é"}, "outbox"),
        ("email.synced", 53675, {}, "mailagent"),
        ("llm.success", 1, {"model": "m"}, "llm_agent"),
        ("email.flag_changed", 2, {"flag": True}, "cli")]


def run_publisher(env: Dict[str, str]) -> None:
    env = clean_env(MAILAGENT_EVENTS_LIB=str(LIB), PYTHONPATH=str(PKG_SRC), **env)
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(CALL_FORMS)], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "5"


def tail_events(hub: Hub) -> subprocess.Popen:
    return subprocess.Popen([str(CLI), "events", "tail", "--relay", hub.url, "--json",
                             "--count", "5", "--timeout", "30"],
                            env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def check(out: str) -> List[Tuple[str, dict]]:
    got = [json.loads(l) for l in out.splitlines()]
    assert len(got) == 5, out
    ids = [g["id"] for g in got]
    keys = [tuple(int(x) for x in i.split("-")) for i in ids]
    assert keys == sorted(keys) and len(set(ids)) == 5
    for g, (t, iid, data, src) in zip(got, WANT):
        ev = g["event"]
        assert (ev["event_type"], ev["internal_id"], ev["data"], ev["source"]) == (t, iid, data, src)
    return got


def test_every_call_form_arrives_once_through_the_hub(hub: Hub) -> None:
    reader = tail_events(hub)
    hub.wait_readers(1)
    run_publisher({"MAILAGENT_RELAY_URL": hub.url})
    out, err = reader.communicate(timeout=40)
    assert reader.returncode == 0, err
    check(out)


def test_nothing_set_but_the_local_port(hub: Hub) -> None:
    """MailAgent's desktop install: no variable but SSE_LOCAL_PORT."""
    reader = tail_events(hub)
    hub.wait_readers(1)
    run_publisher({"SSE_LOCAL_PORT": str(hub.port)})
    out, err = reader.communicate(timeout=40)
    assert reader.returncode == 0, err
    check(out)
