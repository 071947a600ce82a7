"""The fleet's bookkeeping in Redis: node capacity, orphan-GC memory, periodic runs, the status line.

What the periodic (beat) tasks keep between runs and what operators read: the node capacity the
quota refresh computes for the producer (``capacity``), orphan GC's sightings, pass counter and
statistics (``gc:*``), the run stamps and last results of each periodic task
(``maintenance:*``), the previous status line and the totals it was computed from
(``status:last``), the depth of the Celery queues (kombu's lists, read-only), and the
single-flight locks of the health sweep and the GC pass.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, cast

from vkec2.store.base import StoreBase

#: kombu's Redis transport keeps priorities 3, 6 and 9 in lists named queue + "\x06\x16" + priority.
PRIORITY_SEP = "\x06\x16"
PRIORITY_STEPS = (3, 6, 9)


class Bookkeeping(StoreBase):
    """State the periodic passes keep between runs, and what operators read of it."""

    # -- node capacity (quota refresh -> producer) -------------------------------------------

    def put_capacity(self, values: Mapping[str, str]) -> None:
        """Replace the fields given of the node capacity (cpu, memory, pods, source, reason, updated_at)."""
        fields: dict[Any, Any] = dict(values)  # redis-py types mapping keys invariantly
        self.redis.hset(self.keys.capacity(), mapping=fields)

    def capacity(self) -> dict[str, str]:
        """The node capacity last stored (empty before the first quota refresh)."""
        return cast(dict[str, str], self.redis.hgetall(self.keys.capacity()))

    # -- orphan GC ---------------------------------------------------------------------------

    @contextmanager
    def gc_flight(self, ttl_ms: int) -> Iterator[bool]:
        """Hold the GC pass lock for the block if nobody else does; yields whether it is held."""
        with self._single_flight(self.keys.gc_lock(), ttl_ms) as held:
            yield held

    def gc_begin_pass(self) -> int:
        """Count a new GC pass; returns its number."""
        number = int(self.redis.incr(self.keys.gc_pass()))
        self.redis.hincrby(self.keys.gc_stats(), "passes", 1)
        return number

    def gc_last_pass(self) -> int:
        """The number of the last GC pass (0 before the first)."""
        return int(cast(str | None, self.redis.get(self.keys.gc_pass())) or 0)

    def gc_sightings(self) -> dict[str, dict[str, Any]]:
        """Instance ID -> {first, last, count}: the passes that saw it as an orphan candidate."""
        raw = cast(dict[str, str], self.redis.hgetall(self.keys.gc_sightings()))
        return {iid: json.loads(doc) for iid, doc in raw.items()}

    def gc_replace_sightings(self, sightings: Mapping[str, Mapping[str, Any]]) -> None:
        """Replace all sightings with ``sightings`` (one transaction)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self.keys.gc_sightings())
        if sightings:
            pipe.hset(self.keys.gc_sightings(), mapping={k: json.dumps(v) for k, v in sightings.items()})
        pipe.execute()

    def gc_forget_sightings(self, instance_ids: Sequence[str]) -> None:
        if instance_ids:
            self.redis.hdel(self.keys.gc_sightings(), *instance_ids)

    def gc_count(self, stat: str, n: int) -> None:
        """Add ``n`` to a GC statistic (``terminated``, ``would_terminate``)."""
        self.redis.hincrby(self.keys.gc_stats(), stat, n)

    # -- the health sweep ----------------------------------------------------------------------

    @contextmanager
    def sweep_flight(self, ttl_ms: int) -> Iterator[bool]:
        """Hold the health sweep's lock for the block if nobody else does; yields whether it is held."""
        with self._single_flight(self.keys.health_sweep_lock(), ttl_ms) as held:
            yield held

    # -- periodic task runs ----------------------------------------------------------------------

    def record_run(self, task: str, keep: int) -> None:
        """Stamp one run of a periodic task now, keeping the newest ``keep`` stamps."""
        key = self.keys.maintenance_runs(task)
        pipe = self.redis.pipeline(transaction=False)
        pipe.lpush(key, repr(time.time()))
        pipe.ltrim(key, 0, keep - 1)
        pipe.execute()

    def record_result(self, task: str, result: Any) -> None:
        """Keep the summary of a periodic task's finished run (JSON) with the time it finished."""
        self.redis.hset(
            self.keys.maintenance_last(task),
            mapping={"ts": repr(time.time()), "result": json.dumps(result, default=str)},
        )

    # -- the status line -------------------------------------------------------------------------

    def status_last(self) -> dict[str, str]:
        """The last status line (``line``), its time (``ts``) and the totals it was computed from."""
        return cast(dict[str, str], self.redis.hgetall(self.keys.status_last()))

    def put_status_last(self, values: Mapping[str, str]) -> None:
        fields: dict[Any, Any] = dict(values)
        self.redis.hset(self.keys.status_last(), mapping=fields)

    def queue_depths(self, queues: Sequence[str]) -> dict[str, int]:
        """Ready messages per Celery queue (kombu's lists, priorities too, under the cluster's prefix)."""
        pipe = self.redis.pipeline(transaction=False)
        for queue in queues:
            name = f"{self.keys.celery_prefix()}{queue}"
            pipe.llen(name)
            for step in PRIORITY_STEPS:
                pipe.llen(f"{name}{PRIORITY_SEP}{step}")
        lengths = pipe.execute()
        per = 1 + len(PRIORITY_STEPS)
        return {
            queue: sum(int(n) for n in lengths[i * per : (i + 1) * per]) for i, queue in enumerate(queues)
        }
