"""The store's foundation: one Redis client, the key schema and the scripts, shared by every part.

:class:`StoreBase` holds what all parts of :class:`~vkec2.store.redis_store.Store` need — the
client (``decode_responses`` on, so every value is ``str``), the cluster's
:class:`~vkec2.store.keys.Keys` and the registered :class:`~vkec2.store.scripts.Scripts` — plus
the connection chores callers have (ping, close, the address for error messages) and the
single-flight run lock the periodic passes share. :data:`StoreError` is the one exception type a
caller catches when Redis cannot be reached or refuses a command, so nothing outside the store
imports the Redis client library.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, ReadOnlyError, TimeoutError
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

from vkec2.config.redis_url import check_sentinel_master, parse_redis_url
from vkec2.store.keys import Keys
from vkec2.store.scripts import Scripts

#: Raised by every store method when Redis is unreachable or refuses a command.
StoreError = redis.RedisError


class NotReplicated(redis.RedisError):
    """A fenced write fewer than ``redis_wait_replicas`` replicas acknowledged in time (retry the step)."""


#: How long a fenced pod write waits for ``redis_wait_replicas`` replicas to acknowledge it.
WAIT_TIMEOUT_MS = 1000

#: Seconds before the one retry of a command whose connection broke or whose server turned replica.
RETRY_AFTER_SECONDS = 1.0


def _retry_once() -> Retry:
    # ExponentialBackoff waits min(cap, base * 2**failures): RETRY_AFTER_SECONDS before the one retry.
    backoff = ExponentialBackoff(cap=RETRY_AFTER_SECONDS, base=RETRY_AFTER_SECONDS / 2)
    return Retry(backoff, retries=1, supported_errors=(ConnectionError, TimeoutError, ReadOnlyError))


def connect(url: str, *, sentinel_master: str | None = None, connect_timeout: float = 5.0) -> redis.Redis:
    """A client for ``url`` with the fleet's timeouts and health checks (values decoded to ``str``).

    A ``sentinel://`` URL gives a client of the master ``sentinel_master`` that asks the Sentinels
    for its address on every new connection; a command whose connection broke, or that the old
    master refused as a replica (READONLY), is retried once after :data:`RETRY_AFTER_SECONDS`.
    """
    target = parse_redis_url(url)
    check_sentinel_master(target, sentinel_master)
    options: dict[str, Any] = {
        "decode_responses": True,
        "socket_connect_timeout": connect_timeout,
        "socket_timeout": 30,
        "health_check_interval": 30,
        "retry": _retry_once(),
    }
    if sentinel_master is None:
        return redis.Redis.from_url(url, **options)
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(target.sentinels),
        sentinel_kwargs={"socket_connect_timeout": connect_timeout, "socket_timeout": connect_timeout},
        username=target.username,
        password=target.password,
        db=target.db,
        **options,
    )
    return cast(redis.Redis, sentinel.master_for(sentinel_master))  # type: ignore[no-untyped-call]


def reachable(url: str, timeout: float = 1.0) -> bool:
    """Whether a Redis server answers a ping at ``url`` within ``timeout`` seconds to connect."""
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout)
        client.ping()
        client.close()
        return True
    except redis.RedisError:
        return False


class StoreBase:
    """The client, keys and scripts of one cluster's store, and its connection chores."""

    def __init__(self, client: redis.Redis, cluster: str, *, wait_replicas: int = 0) -> None:
        #: The Redis client. Only the store's own modules (and tests) touch it.
        self.redis = client
        #: Replicas that must acknowledge a fenced pod write before it counts (0: none, no WAIT).
        self.wait_replicas = wait_replicas
        #: The cluster's key names. Only the store's own modules (and tests) use them.
        self.keys = Keys(cluster)
        self.scripts = Scripts.register(client)

    @property
    def cluster(self) -> str:
        return self.keys.cluster

    # -- the connection ---------------------------------------------------------------------

    def ping(self) -> None:
        """Raise :data:`StoreError` unless Redis answers."""
        self.redis.ping()

    def close(self) -> None:
        """Close the client's connections (the store is not used afterwards)."""
        self.redis.close()

    def address(self) -> str:
        """``host:port/db`` of the Redis server (Sentinel: ``sentinel:master/db``), for error messages."""
        pool = self.redis.connection_pool
        kwargs = pool.connection_kwargs
        if isinstance(pool, SentinelConnectionPool):
            return f"sentinel:{pool.service_name}/{kwargs.get('db', 0)}"
        return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"

    # -- single-flight run locks --------------------------------------------------------------

    @contextmanager
    def _single_flight(self, key: str, ttl_ms: int) -> Iterator[bool]:
        """Hold the run lock ``key`` for the block if nobody else does; yields whether it is held."""
        token = secrets.token_hex(16)
        if not self.redis.set(key, token, nx=True, px=ttl_ms):
            yield False
            return
        try:
            yield True
        finally:
            self.scripts.release(keys=[key], args=[token])
