"""rediss:// from Python: the URL goes through to the C library unchanged,
with redis-py's ssl_* options, to a real redis-server listening with TLS on
loopback (certificates made here with the openssl command). Both the
Publisher class and the one-import safe_publish (configured by
MAILAGENT_REDIS_URL) deliver every event; a CA the server's certificate
does not come from is refused and counted, never a fallback to plain
text."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from conftest import RedisServer, Subscriber, free_port
from test_safe_publish import run

EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def openssl(d: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)


class TlsRedis:
    """A RedisServer (plain port, for the subscriber) also listening with
    TLS on tls_port, serving a certificate for 127.0.0.1 signed by ca.pem."""

    def __init__(self) -> None:
        if not shutil.which("openssl"):
            pytest.fail("openssl is needed to make the test certificates")
        self.certs = Path(tempfile.mkdtemp(prefix="mae-py-tls."))
        d = self.certs
        for ca in ("ca", "other_ca"):
            openssl(d, "req", "-x509", *EC, "-keyout", f"{ca}.key", "-out", f"{ca}.pem",
                    "-days", "2", "-subj", f"/CN=mailagent-py-test-{ca}")
        openssl(d, "req", *EC, "-keyout", "server.key", "-out", "server.csr",
                "-subj", "/CN=localhost")
        (d / "server.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        openssl(d, "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", "server.pem", "-days", "2",
                "-extfile", "server.ext")
        self.tls_port = free_port()
        self.server = RedisServer(extra=[
            "--tls-port", str(self.tls_port), "--tls-cert-file", str(d / "server.pem"),
            "--tls-key-file", str(d / "server.key"), "--tls-ca-cert-file", str(d / "ca.pem"),
            "--tls-auth-clients", "no"])

    def url(self, ca: str = "ca") -> str:
        return f"rediss://127.0.0.1:{self.tls_port}?ssl_ca_certs={self.certs / ca}.pem"

    def close(self) -> None:
        self.server.close()
        shutil.rmtree(self.certs, ignore_errors=True)


@pytest.fixture
def tls_redis() -> Iterator[TlsRedis]:
    t = TlsRedis()
    try:
        yield t
    finally:
        t.close()


def test_publisher_class_over_tls(tls_redis: TlsRedis, channel: str) -> None:
    from mailagent_events import Publisher

    sub = Subscriber(tls_redis.server, channel)
    p = Publisher(redis_url=tls_redis.url(), channel=channel)
    try:
        for i in range(100):
            p.publish("test.tls", i, {"n": i}, "pytest")
        assert p.flush(5000)
        got = sub.events(100)
        assert [e["internal_id"] for e in got] == list(range(100))
        st = p.stats()
        assert st["published"] == 100 and st["connect_failures"] == 0
    finally:
        p.close()
        sub.close()


def test_unknown_ca_is_refused_and_counted(tls_redis: TlsRedis, channel: str) -> None:
    from mailagent_events import Publisher

    sub = Subscriber(tls_redis.server, channel)
    p = Publisher(redis_url=tls_redis.url("other_ca"), channel=channel)
    try:
        p.publish("test.tls", 1, {}, "pytest")
        deadline = time.monotonic() + 10
        while p.stats()["connect_failures"] < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        st = p.stats()
        assert st["connect_failures"] >= 1 and st["published"] == 0
        assert "certificate verify failed" in st["last_error"], st["last_error"]
        assert sub.quiet() == []
    finally:
        p.close(200)
        sub.close()


def test_safe_publish_over_tls_from_the_environment(tls_redis: TlsRedis, channel: str) -> None:
    sub = Subscriber(tls_redis.server, channel)
    try:
        r = run("""
            import json
            from mailagent_events import safe_publish, default_publisher
            for i in range(20):
                safe_publish("email.synced", i, {"n": i}, "new_watcher")
            print(json.dumps(default_publisher().stats()))
        """, {"MAILAGENT_REDIS_URL": tls_redis.url(), "MAILAGENT_CHANNEL": channel})
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["calls"] == 20
        got = sub.events(20)
        assert [e["internal_id"] for e in got] == list(range(20))
    finally:
        sub.close()
