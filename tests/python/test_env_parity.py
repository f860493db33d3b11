"""The Python package reads the environment as core/env.c does: the C unit
test's own table (build/tests/test_env --table) run through
mailagent_events._env, case by case."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from conftest import LIB
from mailagent_events._env import compose_url, redis_url_from_env, relay_from_env

TEST_ENV = LIB.parent / "tests" / "test_env"


def table() -> list:
    if not TEST_ENV.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{TEST_ENV} is missing: build the tests first")
        pytest.skip(f"{TEST_ENV} is not built")
    out = subprocess.run([str(TEST_ENV), "--table"], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    return [json.loads(line) for line in out.splitlines()]


def test_python_and_c_read_the_environment_alike() -> None:
    cases = [c for c in table() if c["kind"] == "redis"]
    assert len(cases) >= 20
    for c in cases:
        if c["error"] is None:
            url, _ = redis_url_from_env(c["env"])
            assert url == c["url"], c
        else:
            with pytest.raises(ValueError) as e:
                redis_url_from_env(c["env"])
            assert c["error"] in str(e.value), c


def test_event_publisher_composes_as_mailagent() -> None:
    assert compose_url("redis://h:6379", 2) == "redis://h:6379/2"
    assert compose_url("redis://h:6379/", 2) == "redis://h:6379/2"
    assert compose_url(" redis://h:6379/0 ", "4") == "redis://h:6379/4"
    with pytest.raises(ValueError, match="REDIS_DB"):
        compose_url("redis://h", -1)
    with pytest.raises(ValueError, match="already names a database"):
        compose_url("redis://h/3", 2)


def test_relay_url_and_token_read_alike() -> None:
    """MAILAGENT_RELAY_URL, SSE_LOCAL_PORT's loopback default (the
    process-wide publisher only) and MAILAGENT_LOCAL_API_TOKEN."""
    cases = [c for c in table() if c["kind"] == "relay"]
    assert len(cases) >= 15
    for c in cases:
        if c["error"] is None:
            assert relay_from_env(c["env"], local_default=c["local_default"]) == (
                c["url"], c["token"]), c
        else:
            with pytest.raises(ValueError) as e:
                relay_from_env(c["env"], local_default=c["local_default"])
            assert c["error"] in str(e.value), c
