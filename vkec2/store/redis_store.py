"""The Redis state store of one cluster: the only code in vkec2 that names a key or calls Redis.

:class:`Store` is composed of cohesive parts, each in its own module: pod records, per-pod locks
with fencing and fenced writes (:mod:`vkec2.store.pods`), the due times of pod steps in flight
(:mod:`vkec2.store.due`), the status outbox's consumer-group side
(:mod:`vkec2.store.outbox`), the warm-pool mirrors (:mod:`vkec2.store.pools`), EC2 call accounting
and token buckets (:mod:`vkec2.store.ec2calls`), coalesced EC2 calls (:mod:`vkec2.store.batches`),
batched launches (:mod:`vkec2.store.launches`),
the fleet-wide "no capacity" marks of (instance type, zone) pairs (:mod:`vkec2.store.offerings`),
the Redis epoch and the nodes reconciled at it (:mod:`vkec2.store.epoch`), the periodic passes'
bookkeeping (:mod:`vkec2.store.bookkeeping`) and the fleet-wide signals of the remediation breaker
and beat liveness (:mod:`vkec2.store.signals`), on a shared client, key schema
(:mod:`vkec2.store.keys`) and set of Lua scripts (:mod:`vkec2.store.scripts`) from
:mod:`vkec2.store.base`. Callers use its intent-named methods; ``tests/unit/test_house_redis.py``
fails the build when code outside ``vkec2/store/`` touches the client or the keys.
The Dedicated-host pools' part is :mod:`vkec2.store.hosts`.
"""

from __future__ import annotations

from vkec2.config import Settings
from vkec2.store.base import StoreBase, StoreError, connect, reachable
from vkec2.store.batches import Ec2Batches
from vkec2.store.bookkeeping import Bookkeeping
from vkec2.store.due import DueSteps
from vkec2.store.ec2calls import Ec2Accounting
from vkec2.store.epoch import Epochs
from vkec2.store.hosts import HostStore
from vkec2.store.launches import LaunchBatches
from vkec2.store.offerings import UnavailableOfferings
from vkec2.store.outbox import OutboxStreams
from vkec2.store.pods import LOCK_TTL_MS, OUTBOX_MAXLEN, Lock, PodRecords
from vkec2.store.pools import PoolMirrors
from vkec2.store.signals import FleetSignals

__all__ = ["LOCK_TTL_MS", "OUTBOX_MAXLEN", "Lock", "Store", "StoreError", "reachable"]


class Store(
    PodRecords,
    DueSteps,
    OutboxStreams,
    PoolMirrors,
    HostStore,
    Ec2Accounting,
    Ec2Batches,
    LaunchBatches,
    UnavailableOfferings,
    Bookkeeping,
    Epochs,
    FleetSignals,
    StoreBase,
):
    """Typed access to one cluster's state in Redis."""

    @classmethod
    def from_url(
        cls, url: str, cluster: str, *, sentinel_master: str | None = None, wait_replicas: int = 0
    ) -> Store:
        return cls(connect(url, sentinel_master=sentinel_master), cluster, wait_replicas=wait_replicas)

    @classmethod
    def from_settings(cls, settings: Settings) -> Store:
        """The store of the cluster ``settings`` configure, on its Redis (plain or Sentinel)."""
        return cls.from_url(
            settings.redis_url,
            settings.cluster_name,
            sentinel_master=settings.redis_sentinel_master,
            wait_replicas=settings.redis_wait_replicas,
        )
