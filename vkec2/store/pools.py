"""Warm-pool mirrors in Redis: each pool's unclaimed members, the Ready set pods claim from, and more.

A warm pool's truth is in EC2 tags; :class:`~vkec2.fleet.warmpool.WarmPools` rebuilds this mirror
from them on every reconcile. Per pool the store keeps the members' descriptions
(``pool:{name}:instances``), the IDs a pod may take (``pool:{name}:ready``, taken atomically with
:meth:`PoolMirrors.claim_ready`), when each was offered (``pool:{name}:known``, so a claimed
instance whose pod tags are not written yet is not mistaken for a lost one), the launch-slot
counter behind each launch's ClientToken, and the reconcile's single-flight lock. Instance
descriptions go in and come out as dicts (stored as JSON).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

from vkec2.store.base import StoreBase

Instance = dict[str, Any]


class PoolMirrors(StoreBase):
    """The Redis mirror of the warm pools."""

    def claim_ready(self, pool: str) -> tuple[str, dict[str, Any]] | None:
        """Atomically take one Ready instance out of a warm pool: its ID and description, or None."""
        found = self.scripts.claim(keys=[self.keys.pool_ready(pool), self.keys.pool_instances(pool)])
        if not found:
            return None
        instance = json.loads(found[1])
        instance.setdefault("InstanceId", found[0])
        return str(found[0]), instance

    # -- reading --------------------------------------------------------------------------

    def pool_members(self, pool: str) -> dict[str, Instance]:
        """Instance ID -> description of every unclaimed member in the mirror."""
        raw = cast(dict[str, str], self.redis.hgetall(self.keys.pool_instances(pool)))
        return {iid: json.loads(doc) for iid, doc in raw.items()}

    def pool_ready(self, pool: str) -> set[str]:
        """IDs of the members a pod may claim now."""
        return cast(set[str], self.redis.smembers(self.keys.pool_ready(pool)))

    def pool_offered(self, pool: str) -> dict[str, float]:
        """Instance ID -> when it was put in the Ready set (claimed ones stay until forgotten)."""
        raw = cast(dict[str, str], self.redis.hgetall(self.keys.pool_known(pool)))
        return {iid: float(ts) for iid, ts in raw.items()}

    def pool_sizes(self, pool: str) -> tuple[int, int]:
        """(Ready members, unclaimed members) of a pool."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.scard(self.keys.pool_ready(pool))
        pipe.hlen(self.keys.pool_instances(pool))
        ready, members = pipe.execute()
        return int(ready), int(members)

    # -- writing --------------------------------------------------------------------------

    def pool_put(self, pool: str, instance_id: str, instance: Instance) -> None:
        """Record (or update) an unclaimed member that is not Ready."""
        self.redis.hset(self.keys.pool_instances(pool), instance_id, json.dumps(instance))

    def pool_offer(self, pool: str, instance_id: str, instance: Instance, at: float) -> None:
        """Make a member Ready to be claimed, remembering when (one transaction)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.keys.pool_instances(pool), instance_id, json.dumps(instance))
        pipe.hset(self.keys.pool_known(pool), instance_id, repr(at))
        pipe.sadd(self.keys.pool_ready(pool), instance_id)
        pipe.execute()

    def pool_withdraw(self, pool: str, instance_id: str) -> bool:
        """Take a member out of the Ready set; False when it was not there (a pod claimed it)."""
        return bool(self.redis.srem(self.keys.pool_ready(pool), instance_id))

    def pool_forget(self, pool: str, instance_ids: list[str]) -> None:
        """Drop members from the mirror altogether (one transaction)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.srem(self.keys.pool_ready(pool), *instance_ids)
        pipe.hdel(self.keys.pool_instances(pool), *instance_ids)
        pipe.hdel(self.keys.pool_known(pool), *instance_ids)
        pipe.execute()

    def pool_forget_offer(self, pool: str, instance_id: str) -> None:
        """Forget when a member was offered (it is gone from EC2 and from the mirror)."""
        self.redis.hdel(self.keys.pool_known(pool), instance_id)

    def pool_next_slot(self, pool: str) -> int:
        """The next launch slot of a pool (each slot's launch has its own ClientToken)."""
        return int(self.redis.incr(self.keys.pool_slots(pool)))

    def pool_slot_floor(self, pool: str, highest_seen: int) -> int:
        """Never hand out a slot at or below ``highest_seen`` (a slot seen in a member's ClientToken,
        after Redis lost the counter); returns the counter."""
        return int(self.scripts.raise_to(keys=[self.keys.pool_slots(pool)], args=[highest_seen]))

    @contextmanager
    def pool_reconcile_flight(self, pool: str, ttl_ms: int) -> Iterator[bool]:
        """Hold the pool's reconcile lock for the block if nobody else does; yields whether it is held."""
        with self._single_flight(self.keys.pool_reconcile_lock(pool), ttl_ms) as held:
            yield held
