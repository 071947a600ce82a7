"""Fleet-wide signals in Redis: the health sweep's remediation breaker and what beat leaves behind.

The breaker (``health:breaker``, JSON of :class:`~vkec2.domain.breaker.BreakerState`) is written by
the health sweep every pass that checked agents and read by the producer (its node condition),
``vkec2 status`` and the metrics. Beat liveness is read, never written: whether RedBeat's lock
(``beat::lock``) is held, and the newest finished run of any periodic task
(``maintenance:last:{task}``), as :class:`~vkec2.domain.beat.BeatSignals` for the rule in
:mod:`vkec2.domain.beat`.
"""

from __future__ import annotations

import json
from typing import cast

from vkec2.contract import PERIODIC_TASKS
from vkec2.domain.beat import BeatSignals
from vkec2.domain.breaker import BreakerState
from vkec2.store.base import StoreBase


class FleetSignals(StoreBase):
    """The remediation breaker's state and the signals of beat liveness."""

    def remediation_breaker(self) -> BreakerState:
        """The breaker as the last sweep pass left it (closed before the first pass)."""
        raw = cast(str | None, self.redis.get(self.keys.health_breaker()))
        return BreakerState.from_dict(json.loads(raw) if raw else None)

    def put_remediation_breaker(self, state: BreakerState) -> None:
        self.redis.set(self.keys.health_breaker(), json.dumps(state.to_dict()))

    def beat_signals(self) -> BeatSignals:
        """Whether RedBeat's lock is held, and when the newest periodic task run finished (0: never)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.exists(self.keys.beat_lock())
        for task in PERIODIC_TASKS:
            pipe.hget(self.keys.maintenance_last(task), "ts")
        held, *stamps = pipe.execute()
        return BeatSignals(lock_held=bool(held), last_run=max((float(t) for t in stamps if t), default=0.0))
