"""The shared state of coalesced EC2 calls: what is wanted, who gathers it, and what came back.

Many pods poll "is my instance running yet" and many deletes terminate one instance each; EC2 takes
up to 1,000 IDs per DescribeInstances or TerminateInstances. The batching gateway
(:mod:`vkec2.ec2.batching`) gathers the IDs all workers want into ``ec2:batch:{kind}:wanted``, lets
one worker at a time lead a batch (``ec2:batch:{kind}:lead``, a lock with a token and a short TTL
that the leader's heartbeat extends, so a killed leader's lead lapses within seconds), and publishes
the answers: each instance's last description in ``ec2:seen:{id}`` and each termination sent in
``ec2:terminated:{id}``, both with a TTL, so every waiting worker reads its own answer.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Mapping
from functools import cached_property
from typing import Any, cast

from vkec2.domain.instances import slim
from vkec2.store.base import StoreBase
from vkec2.store.heartbeat import LockHeartbeat

SEEN_TTL_SECONDS = 300
TERMINATED_TTL_SECONDS = 3600
DESCRIBE = "describe"
TERMINATE = "terminate"
#: A batch lead's TTL; its holder's heartbeat extends it every third of that while it works.
LEAD_TTL_MS = 3000


class Ec2Batches(StoreBase):
    """Wanted IDs, batch leadership and published answers of the coalesced EC2 calls."""

    def want(self, kind: str, instance_ids: Iterable[str], now: float) -> None:
        """Ask for ``instance_ids`` to be part of the next ``kind`` batch (the earliest wish is kept)."""
        ids = list(instance_ids)
        if not ids:
            return
        key = self.keys.ec2_batch_wanted(kind)
        if kind == DESCRIBE:
            self.redis.zadd(key, dict.fromkeys(ids, now), nx=True)
        else:
            self.redis.sadd(key, *ids)

    def take_wanted(self, kind: str, limit: int) -> list[str]:
        """Remove and return up to ``limit`` wanted IDs (the oldest wishes first for describes)."""
        key = self.keys.ec2_batch_wanted(kind)
        if kind == DESCRIBE:
            popped = cast(list[tuple[str, float]], self.redis.zpopmin(key, limit))
            return [member for member, _ in popped]
        return cast(list[str], self.redis.spop(key, limit) or [])

    def lead_batch(self, kind: str, ttl_ms: int) -> str | None:
        """Become the one worker that sends the next ``kind`` batch: a token to release, or None."""
        token = secrets.token_hex(8)
        taken = self.redis.set(self.keys.ec2_batch_lead(kind), token, nx=True, px=ttl_ms)
        return token if taken else None

    @cached_property
    def lead_heartbeat(self) -> LockHeartbeat:
        """The keep-alive thread of the batch leads this process holds (started on first use)."""
        return LockHeartbeat(self.extend_lead, what="EC2 batch")

    def extend_lead(self, kind: str, token: str, ttl_ms: int) -> bool:
        """Push out the expiry of the ``kind`` lead held with ``token``; False if it was lost meanwhile."""
        return bool(self.scripts.extend(keys=[self.keys.ec2_batch_lead(kind)], args=[token, ttl_ms]))

    def end_batch(self, kind: str, token: str) -> None:
        """Give up the lead of ``kind`` batches, if this token still holds it."""
        self.scripts.release(keys=[self.keys.ec2_batch_lead(kind)], args=[token])

    def publish_seen(self, answers: Mapping[str, dict[str, Any] | None], now: float) -> None:
        """Record the describe answer for each ID (None: EC2 does not know the instance)."""
        if not answers:
            return
        pipe = self.redis.pipeline(transaction=False)
        for instance_id, instance in answers.items():
            kept = slim(instance) if instance is not None else None  # what the fleet reads of it
            doc = json.dumps({"at": now, "instance": kept}, separators=(",", ":"))
            pipe.set(self.keys.ec2_seen(instance_id), doc, ex=SEEN_TTL_SECONDS)
        pipe.execute()

    def seen_since(self, instance_ids: Iterable[str], since: float) -> dict[str, dict[str, Any] | None]:
        """The published answers for ``instance_ids`` no older than ``since`` (missing: none fresh)."""
        ids = list(instance_ids)
        if not ids:
            return {}
        raw = cast(list[str | None], self.redis.mget([self.keys.ec2_seen(i) for i in ids]))
        out: dict[str, dict[str, Any] | None] = {}
        for instance_id, doc in zip(ids, raw, strict=True):
            if doc is None:
                continue
            entry = json.loads(doc)
            if float(entry.get("at", 0)) >= since:
                out[instance_id] = entry.get("instance")
        return out

    def publish_terminated(self, answers: Mapping[str, bool], now: float) -> None:
        """Record each ID a TerminateInstances named: True when EC2 knew it, False for NotFound."""
        pipe = self.redis.pipeline(transaction=False)
        for instance_id, found in answers.items():
            doc = json.dumps({"at": now, "found": found})
            pipe.set(self.keys.ec2_terminated(instance_id), doc, ex=TERMINATED_TTL_SECONDS)
        pipe.execute()

    def terminated_since(self, instance_ids: Iterable[str], since: float) -> dict[str, bool]:
        """For each of ``instance_ids`` a TerminateInstances named since ``since``: whether EC2 knew it."""
        ids = list(instance_ids)
        if not ids:
            return {}
        raw = cast(list[str | None], self.redis.mget([self.keys.ec2_terminated(i) for i in ids]))
        out: dict[str, bool] = {}
        for instance_id, doc in zip(ids, raw, strict=True):
            if doc is not None and float(json.loads(doc).get("at", 0)) >= since:
                out[instance_id] = bool(json.loads(doc).get("found", True))
        return out

    def forget_terminated(self, instance_ids: Iterable[str]) -> None:
        """Drop the published answers of ``instance_ids`` (a NotFound to be asked again)."""
        ids = list(instance_ids)
        if ids:
            self.redis.delete(*[self.keys.ec2_terminated(i) for i in ids])
