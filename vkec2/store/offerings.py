"""The fleet-wide "unavailable" cache: (instance type, zone) pairs that EC2 just said it has no capacity for.

When RunInstances answers a capacity error (``InsufficientInstanceCapacity``, ``Unsupported`` in a
zone, a quota), the create step marks the pair it tried here for ``ec2.unavailable_ttl_seconds``
(Karpenter keeps such a cache for 3 minutes), and every worker consults the marks before trying a
pair, so the whole fleet stops asking for a type that is sold out in a zone. A quota is marked for
the pseudo-zone ``*`` (the whole region). Each mark is one string key with a TTL
(``unavailable:{instance_type}:{zone}``, see :mod:`vkec2.store.keys`) holding the AWS answer as
JSON (``code``, ``message``, ``at``), so the last reason can be shown on a pod that skipped the pair.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from typing import Any, cast

from vkec2.contract import REGION_WIDE
from vkec2.store.base import StoreBase


class UnavailableOfferings(StoreBase):
    """Marks of (instance type, zone) pairs that have no capacity right now, with a TTL."""

    def mark_unavailable(
        self, instance_type: str, zone: str, answer: Mapping[str, Any], ttl_seconds: float
    ) -> None:
        """Mark ``instance_type`` in ``zone`` unavailable for ``ttl_seconds``, keeping EC2's ``answer``."""
        ttl_ms = max(1, int(ttl_seconds * 1000))
        key = self.keys.unavailable(instance_type, zone)
        self.redis.set(key, json.dumps(dict(answer), separators=(",", ":")), px=ttl_ms)
        if zone == REGION_WIDE:  # a quota: the node shows it until it expires or quotas refresh
            until = time.time() + ttl_seconds
            self.redis.hset(self.keys.quota_exceeded(), instance_type, json.dumps({**answer, "until": until}))

    def quota_exceeded(self) -> dict[str, dict[str, Any]]:
        """Instance types refused for a quota in the whole region and not yet retried: type -> answer."""
        raw = cast(dict[str, str], self.redis.hgetall(self.keys.quota_exceeded()))
        answers = {kind: json.loads(doc) for kind, doc in raw.items()}
        expired = [kind for kind, answer in answers.items() if float(answer.get("until", 0)) < time.time()]
        if expired:
            self.redis.hdel(self.keys.quota_exceeded(), *expired)
        return {kind: answer for kind, answer in answers.items() if kind not in expired}

    def clear_quota_marks(self) -> None:
        """Forget every region-wide quota mark: quotas were refreshed, so launches try again."""
        kinds = cast(list[str], self.redis.hkeys(self.keys.quota_exceeded()))
        keys = [self.keys.unavailable(kind, REGION_WIDE) for kind in kinds]
        self.redis.delete(self.keys.quota_exceeded(), *keys)

    def unavailable(self, offerings: Iterable[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
        """The marked pairs among ``offerings`` (instance type, zone), each with its marking answer."""
        pairs = list(dict.fromkeys(offerings))
        if not pairs:
            return {}
        raw = cast(list[str | None], self.redis.mget([self.keys.unavailable(t, z) for t, z in pairs]))
        return {pair: json.loads(value) for pair, value in zip(pairs, raw, strict=True) if value}

    def clear_unavailable(self, instance_type: str, zone: str) -> None:
        """Forget the mark of one pair (for instance when a quota was raised)."""
        self.redis.delete(self.keys.unavailable(instance_type, zone))
