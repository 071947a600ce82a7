"""Dedicated hosts in Redis: each host pool's hosts as EC2 last described them, and the pods' slot claims.

A host's truth is EC2 (DescribeHosts and the cluster's tags); the hosts pass
(:mod:`vkec2.fleet.hosts`) rebuilds ``hosts:{pool}`` from it. What EC2 cannot know is which pod
is about to launch on which host: a create step takes a slot with :meth:`HostStore.claim_host`, a
Lua script that chooses an available host with a free slot and records the pod's claim in one
step (``hosts:{pool}:claims``), so two workers never put two pods on one Mac host. The pool's
allocation sequence, the allocation in flight (its ClientToken is re-sent by a step that stopped
half-way), the allocation and pass locks and the account's host quota per family live here too.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, cast

from vkec2.domain.hosts import HostRecord
from vkec2.store.base import StoreBase


class HostStore(StoreBase):
    """The Redis side of the host pools."""

    def host_records(self, pool: str) -> list[HostRecord]:
        """Every host of ``pool`` in the mirror, with the pods' claims."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hgetall(self.keys.hosts(pool))
        pipe.hgetall(self.keys.host_claims(pool))
        hosts, claims = cast(tuple[dict[str, str], dict[str, str]], tuple(pipe.execute()))
        return [
            HostRecord.from_dict(json.loads(doc), json.loads(claims.get(host_id, "{}")))
            for host_id, doc in sorted(hosts.items())
        ]

    def put_hosts(self, pool: str, records: Iterable[HostRecord]) -> None:
        """Record (or update) hosts of ``pool``; their claims are the claim script's, untouched."""
        mapping: dict[Any, Any] = {r.host_id: json.dumps(r.to_dict(), sort_keys=True) for r in records}
        if mapping:  # (redis-py types mapping keys invariantly)
            self.redis.hset(self.keys.hosts(pool), mapping=mapping)

    def forget_hosts(self, pool: str, host_ids: Iterable[str]) -> None:
        """Drop released (or unknown) hosts and their claims."""
        ids = list(host_ids)
        if ids:
            pipe = self.redis.pipeline(transaction=True)
            pipe.hdel(self.keys.hosts(pool), *ids)
            pipe.hdel(self.keys.host_claims(pool), *ids)
            pipe.execute()

    def claim_host(self, pool: str, uid: str, now: float) -> str | None:
        """Atomically take a slot for pod ``uid`` on an available host of ``pool``; its ID, or None."""
        found = self.scripts.claim_host(
            keys=[self.keys.hosts(pool), self.keys.host_claims(pool)], args=[uid, now]
        )
        return str(found) if found else None

    def put_host_claims(self, pool: str, host_id: str, claims: Mapping[str, float]) -> None:
        """Replace one host's claims (the hosts pass, rebuilding them from the instances' tags)."""
        if claims:
            self.redis.hset(self.keys.host_claims(pool), host_id, json.dumps(dict(claims), sort_keys=True))
        else:
            self.redis.hdel(self.keys.host_claims(pool), host_id)

    def drop_host_claim(self, pool: str, host_id: str, uid: str) -> bool:
        """Free pod ``uid``'s slot on ``host_id``; False when it held none."""
        return bool(self.scripts.drop_host_claim(keys=[self.keys.host_claims(pool)], args=[host_id, uid]))

    # -- allocation ---------------------------------------------------------------------------------

    def host_allocation_intent(self, pool: str) -> int:
        """The sequence number of the pool's allocation in flight, or a new one, now in flight."""
        return int(self.scripts.host_intent(keys=[self.keys.host_intent(pool), self.keys.host_slots(pool)]))

    def clear_host_allocation_intent(self, pool: str) -> None:
        """The allocation in flight is recorded (or refused for good): the next one takes a new number."""
        self.redis.delete(self.keys.host_intent(pool))

    def host_slot_floor(self, pool: str, highest_seen: int) -> int:
        """Never hand out an allocation number at or below ``highest_seen`` (a host's tag, after a loss)."""
        return int(self.scripts.raise_to(keys=[self.keys.host_slots(pool)], args=[highest_seen]))

    @contextmanager
    def host_allocation_flight(self, pool: str, ttl_ms: int = 60_000) -> Iterator[bool]:
        """Hold the pool's allocation lock for the block if nobody else does; yields whether it is held."""
        with self._single_flight(self.keys.host_allocate_lock(pool), ttl_ms) as held:
            yield held

    @contextmanager
    def hosts_pass_flight(self, ttl_ms: int = 120_000) -> Iterator[bool]:
        """Hold the hosts pass's run lock if nobody else does; yields whether it is held."""
        with self._single_flight(self.keys.hosts_pass_lock(), ttl_ms) as held:
            yield held

    # -- quota --------------------------------------------------------------------------------------

    def put_host_quotas(self, quotas: Mapping[str, float]) -> None:
        """Instance family -> the account's Dedicated Host quota (replacing the last refresh's)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self.keys.host_quota())
        if quotas:
            pipe.hset(self.keys.host_quota(), mapping={k: repr(v) for k, v in quotas.items()})
        pipe.execute()

    def host_quota(self, family: str) -> float | None:
        """The account's host quota for ``family``, or None when unknown."""
        raw = cast(str | None, self.redis.hget(self.keys.host_quota(), family))
        return float(raw) if raw is not None else None
