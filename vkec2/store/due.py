"""Due times of pod steps in flight: which pod's next create or delete step is late, and taking it.

Every pod with a chain in flight has an entry in the sorted set ``due`` (UID -> when its next step
should have started) and its task in ``due:task`` (see :mod:`vkec2.store.keys`). The producer's
writes add it, a chain's fenced writes move or clear it (:mod:`vkec2.store.pods`); this part is
the resume task's side: :meth:`DueSteps.claim_due` takes the steps overdue at a cutoff whose pod
lock is free and moves their due time on in one Lua call, so two passes never publish the same
step twice; :meth:`DueSteps.oldest_queued_at` reads how long the oldest message of a Celery queue
has waited (kombu's list, read-only), so a busy fleet is not mistaken for a lost message.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, cast

from vkec2 import contract
from vkec2.domain.models import DueStep
from vkec2.store.base import StoreBase

CLAIM_BATCH = 500


class DueSteps(StoreBase):
    """The due set of pod steps in flight: read, claim, postpone, mark."""

    def due_steps(self) -> dict[str, tuple[float, DueStep]]:
        """Every pod step in flight: UID -> (due time, step)."""
        scores = cast(list[tuple[str, float]], self.redis.zrange(self.keys.due(), 0, -1, withscores=True))
        raw = cast(dict[str, str], self.redis.hgetall(self.keys.due_task()))
        return {uid: (at, DueStep.from_json(uid, raw[uid])) for uid, at in scores if uid in raw}

    def expect_step(self, step: DueStep, due_at: float) -> None:
        """Make ``step`` the pod's due step at ``due_at`` (a task sent from outside a chain)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.zadd(self.keys.due(), {step.uid: due_at})
        pipe.hset(self.keys.due_task(), step.uid, step.to_json())
        pipe.execute()

    def postpone(self, uid: str, task: str, due_at: float) -> bool:
        """Move the pod's due step of ``task`` to ``due_at`` (it retries later); False if none is due."""
        keys = [self.keys.due(), self.keys.due_task()]
        return bool(int(self.scripts.postpone(keys=keys, args=[uid, task, repr(due_at)])))

    def claim_due(
        self, cutoff: float, now: float, backoff: Callable[[int], float], limit: int = CLAIM_BATCH
    ) -> list[DueStep]:
        """Take the steps due before ``cutoff`` whose pod lock is free, oldest first, at most ``limit``.

        Each one taken is due again at ``now + backoff(resumes)`` with one more resume, so the next
        pass publishes it again only if it still made no progress by then.
        """
        found = cast(
            list[tuple[str, float]],
            self.redis.zrangebyscore(self.keys.due(), "-inf", cutoff, start=0, num=limit, withscores=True),
        )
        if not found:
            return []
        raws = cast(list[Any], self.redis.hmget(self.keys.due_task(), [uid for uid, _ in found]))
        keys, args, steps = [self.keys.due(), self.keys.due_task()], [], {}
        for (uid, seen), raw in zip(found, raws, strict=True):
            step = DueStep.from_json(uid, raw) if raw else DueStep(uid, contract.POD_CREATE)
            again = DueStep(uid, step.task, step.generation, step.resumes + 1)
            keys += [self.keys.pod(uid), self.keys.lock(uid)]
            args += [uid, repr(seen), repr(now + backoff(step.resumes)), again.to_json()]
            steps[uid] = step
        claimed = cast(list[str], self.scripts.claim_due(keys=keys, args=args))
        return [steps[uid] for uid in claimed]

    def oldest_queued_at(self, queue: str) -> float | None:
        """When the oldest message waiting in ``queue`` was published (None: empty, or no time on it)."""
        name = f"{self.keys.celery_prefix()}{queue}"
        raw = cast(str | None, self.redis.lindex(name, -1))  # kombu pushes left, workers pop right
        if raw is None:
            return None
        try:
            sent = json.loads(raw).get("headers", {}).get(contract.SENT_AT_HEADER)
            return None if sent is None else float(sent)
        except (ValueError, AttributeError, TypeError):
            return None
