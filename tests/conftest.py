"""Session-wide test services: a private redis-server and moto's EC2 server, on free loopback ports.

Each pytest-xdist worker starts its own; tests take a flushed Redis database each (1-63 in turn),
a reset moto and a unique cluster name, so they never see each other's keys, queues or instances.
Property-based tests run under the ``vkec2`` hypothesis profile and the terminal summary lists
the cases each tried: both come from the plugin :mod:`tests.support.hypothesis_cases`.
"""

from __future__ import annotations

import itertools
import os
import urllib.request
import uuid
from collections.abc import Iterator

import pytest
import redis

from tests.support.services import start_agent_sim, start_moto, start_redis
from vkec2.store.redis_store import Store

# Dummy credentials for moto; never real ones.
for _key, _value in {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-west-2",
}.items():
    os.environ[_key] = _value
os.environ.pop("VKEC2_CONFIG", None)
# `import tasks` loads the configuration of this process (defaults: agents on private IPs, no
# agent.tls), which is refused without the explicit flag (vkec2/config/transport.py).
os.environ["VKEC2_AGENT__INSECURE_PLAINTEXT"] = "true"

#: The hypothesis profile and the "cases tried" summary (tests/support/hypothesis_cases.py).
pytest_plugins = ["tests.support.hypothesis_cases"]

#: Databases 1-63, taken in turn: each is flushed before and after its test, and a test gets the
#: database 62 tests after its last user (the test processes it started stopped long before).
_databases = itertools.cycle(range(1, 64))


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """Base URL of a private redis-server (no database number)."""
    proc, url = start_redis()
    yield url
    proc.stop()


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    """A fresh, empty database on the private redis-server."""
    db = next(_databases)
    url = f"{redis_server}/{db}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture
def store(redis_url: str) -> Iterator[Store]:
    """The Redis store of a fresh cluster on a fresh database."""
    s = Store.from_url(redis_url, f"t-{uuid.uuid4().hex[:8]}")
    yield s
    s.close()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto's server (EC2, S3, IAM, ...) over HTTP, for the whole session."""
    proc, url = start_moto()
    yield url
    proc.stop()


@pytest.fixture
def moto_url(moto_server: str) -> str:
    """moto's server, its state reset: each test starts with an empty account.

    moto keeps terminated instances for ever and answers a tag-filtered DescribeInstances in time
    that grows with the square of the instances it holds (11 s at 3,000), where EC2 forgets them
    after about an hour and answers in well under a second. A session's worth of instances would
    turn every filtered call into a read timeout late in a run, so each test starts from none.
    """
    request = urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=30):
        pass
    return moto_server


@pytest.fixture(scope="session")
def agent_sim(moto_server: str) -> Iterator[str]:
    """The agent simulator (``vkec2 agent-sim``) answering for moto's instances; yields HOST:PORT."""
    proc, endpoint = start_agent_sim(moto_server)
    yield endpoint
    proc.stop()
