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

import redis

from vkec2.store.keys import Keys
from vkec2.store.scripts import Scripts

#: Raised by every store method when Redis is unreachable or refuses a command.
StoreError = redis.RedisError


def connect(url: str, *, connect_timeout: float = 5.0) -> redis.Redis:
    """A client for ``url`` with the fleet's timeouts and health checks (values decoded to ``str``)."""
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=connect_timeout,
        socket_timeout=30,
        health_check_interval=30,
    )


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

    def __init__(self, client: redis.Redis, cluster: str) -> None:
        #: The Redis client. Only the store's own modules (and tests) touch it.
        self.redis = client
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
        """``host:port/db`` of the Redis server, for error messages."""
        kwargs = self.redis.connection_pool.connection_kwargs
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
