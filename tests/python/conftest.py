"""Fixtures of the Python suite: the library under test, throwaway
redis-server processes on free loopback ports, subscribers, fresh databases.

The library is $MAILAGENT_EVENTS_LIB, else build/libmailagent-events.so.2 of
this checkout; the package is imported from bindings/python/src. Run with
Debian's interpreter (it sees python3-pytest and python3-redis):
    MAILAGENT_EVENTS_LIB=$PWD/build/libmailagent-events.so.2 /usr/bin/python3 -m pytest tests/python
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, List, Optional

import pytest

ROOT = Path(__file__).resolve().parents[2]
PKG_SRC = ROOT / "bindings" / "python" / "src"

if not os.environ.get("MAILAGENT_EVENTS_LIB"):
    os.environ["MAILAGENT_EVENTS_LIB"] = str(ROOT / "build" / "libmailagent-events.so.2")
LIB = Path(os.environ["MAILAGENT_EVENTS_LIB"])
if not LIB.exists():
    raise pytest.UsageError(f"{LIB} does not exist: build the library first (make build)")
# The suite talks to the servers it starts, never to one named by the caller.
for var in ("MAILAGENT_REDIS_URL", "MAILAGENT_CHANNEL", "MAILAGENT_STREAM", "REDIS_URL", "REDIS_DB",
            "MAILAGENT_RELAY_URL", "MAILAGENT_LOCAL_API_TOKEN", "SSE_LOCAL_PORT"):
    os.environ.pop(var, None)
sys.path.insert(0, str(PKG_SRC))

import redis  # noqa: E402  (python3-redis)

_channels = itertools.count()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# With no Redis URL the process-wide publisher posts to
# http://127.0.0.1:${SSE_LOCAL_PORT:-9200}: point it at a port nothing of
# this suite listens on, never at a hub someone runs on 9200.
os.environ["SSE_LOCAL_PORT"] = str(free_port())


class FakeHub:
    """A stand-in for `mailagent events serve` in hub mode, enough for the
    publisher's side: POST /api/events/publish of NDJSON, the token checked
    when one is set, events applied once per (X-MailAgent-Publisher,
    number) as the hub does, answered {"accepted":N,"skipped":K,"last_id"}.
    The events it applied are in .events (dicts), in order."""

    def __init__(self, token: Optional[str] = None) -> None:
        import http.server
        import threading

        hub = self
        self.token = token
        self.events: List[dict] = []
        self.requests = 0
        self.refused = 0
        self._applied: dict = {}
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def _answer(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                with hub._cond:
                    hub.requests += 1
                    if self.path != "/api/events/publish":
                        hub.refused += 1
                        return self._answer(404, {"error": "not found"})
                    if hub.token is not None and \
                            self.headers.get("X-MailAgent-Local-Token") != hub.token:
                        hub.refused += 1
                        return self._answer(401, {"error": "unauthorized"})
                    pub = self.headers.get("X-MailAgent-Publisher") or ""
                    num = int(self.headers.get("X-MailAgent-Batch-Start") or 1)
                    accepted = skipped = 0
                    for line in body.split(b"\n"):
                        if not line.strip():
                            continue
                        if num <= hub._applied.get(pub, 0):
                            skipped += 1
                        else:
                            hub._applied[pub] = num
                            hub.events.append(json.loads(line))
                            accepted += 1
                        num += 1
                    hub._cond.notify_all()
                    last = len(hub.events)
                self._answer(200, {"accepted": accepted, "skipped": skipped,
                                   "last_id": f"1-{last}"})

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def wait(self, n: int, timeout: float = 10.0) -> List[dict]:
        """The first n events applied, waiting up to timeout for them."""
        with self._cond:
            self._cond.wait_for(lambda: len(self.events) >= n, timeout)
            return list(self.events[:n])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_hub() -> Iterator[FakeHub]:
    h = FakeHub()
    try:
        yield h
    finally:
        h.close()


class RedisServer:
    """A redis-server on 127.0.0.1, no persistence, in its own directory."""

    def __init__(self, extra: Optional[List[str]] = None) -> None:
        """extra: more redis-server arguments (e.g. a TLS port)."""
        self.dir = tempfile.mkdtemp(prefix="mae-py-redis.")
        self.proc: Optional[subprocess.Popen] = None
        self.port = 0
        self.stopped = False
        for _ in range(5):
            self.port = free_port()
            self.proc = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--dir", self.dir,
                 "--logfile", os.path.join(self.dir, "redis.log"), *(extra or [])],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    if self.client().ping():
                        return
                except redis.exceptions.ConnectionError:
                    time.sleep(0.02)
            self._kill()
        shutil.rmtree(self.dir, ignore_errors=True)
        raise RuntimeError("could not start redis-server on a free loopback port")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def client(self) -> "redis.Redis":
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def pause(self) -> None:
        """SIGSTOP: the server keeps its socket open and answers nothing."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        self.stopped = True

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)
        self.stopped = False

    def _kill(self) -> None:
        p = self.proc
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGCONT)
        p.terminate()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

    def close(self) -> None:
        self._kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class Subscriber:
    """A redis-py subscriber on one channel; messages are kept as raw bytes."""

    def __init__(self, server: RedisServer, channel: str) -> None:
        self.channel = channel
        self.conn = redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=10)
        self.ps = self.conn.pubsub()
        self.ps.subscribe(channel)
        deadline = time.monotonic() + 5
        # Wait for the subscription to be in place before anything publishes.
        while time.monotonic() < deadline:
            m = self.ps.get_message(timeout=0.1)
            if m and m["type"] == "subscribe":
                break
        else:
            raise RuntimeError("subscribe not confirmed")

    def take(self, n: int, timeout: float = 10.0) -> List[bytes]:
        """The next n messages (fewer if the timeout passes first)."""
        out: List[bytes] = []
        deadline = time.monotonic() + timeout
        while len(out) < n and time.monotonic() < deadline:
            m = self.ps.get_message(timeout=0.2)
            if m and m["type"] == "message":
                out.append(m["data"])
        return out

    def events(self, n: int, timeout: float = 10.0) -> List[dict]:
        return [json.loads(b) for b in self.take(n, timeout)]

    def quiet(self, wait: float = 0.3) -> List[bytes]:
        """Whatever arrives within `wait` seconds (for "nothing was sent")."""
        return self.take(1 << 30, wait)

    def close(self) -> None:
        try:
            self.ps.close()
            self.conn.close()
        except Exception:
            pass


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One healthy server for the tests that do not hurt it."""
    s = RedisServer()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A server of this test alone (to stop, pause or kill)."""
    s = RedisServer()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def channel() -> str:
    return f"mae-py-test:{os.getpid()}:{next(_channels)}"


@pytest.fixture
def subscriber(redis_server: RedisServer, channel: str) -> Iterator[Subscriber]:
    s = Subscriber(redis_server, channel)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def publisher(redis_server: RedisServer, channel: str) -> Iterator[Any]:
    from mailagent_events import Publisher

    p = Publisher(redis_server.url, channel=channel)
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def tmpdir_path() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="mae-py-db."))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


class Clock:
    """A settable clock for Db(clock=...): retry times become exact."""

    def __init__(self, now: float = 1_716_096_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db(publisher: Any, tmpdir_path: Path, clock: Clock) -> Iterator[Any]:
    from mailagent_events import Db

    d = Db(tmpdir_path / "mail.db", publisher=publisher, clock=clock)
    try:
        yield d
    finally:
        d.close()
