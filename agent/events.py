"""The agent's recent pod events: a bounded, aggregating list the fleet reads with every PodStatus.

Probe results the kubelet would report as Events (``Unhealthy``, ``Killing``) happen on the
instance, where nothing talks to Kubernetes; the agent keeps the most recent ones here and sends
them in ``PodStatus.events`` so the worker can forward the ones it has not seen yet (by sequence
number) to the status outbox. Like the kubelet's event correlator, an event identical to a recent
one (same type, reason and message within :data:`AGGREGATE_SECONDS`) is counted on that entry
instead of being added again, so a probe that keeps failing cannot flood the list. Plain stdlib;
no library offers a bounded, counting event list that fits an agent with no Kubernetes client.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, replace

#: How many events the agent keeps (the oldest are dropped first).
MAX_EVENTS = 50
#: An identical event within this many seconds of the last one is counted, not added (kubelet: 10 min).
AGGREGATE_SECONDS = 600.0


@dataclass(frozen=True)
class AgentEvent:
    """One event about the pod: ``seq`` orders new entries; ``count`` grows when it repeats."""

    seq: int
    type: str  # Normal | Warning
    reason: str
    message: str
    container: str = ""
    count: int = 1
    first: float = 0.0
    last: float = 0.0


class EventLog:
    """Recent events, newest last; not thread-safe on its own (its owner's lock guards it)."""

    def __init__(self, limit: int = MAX_EVENTS) -> None:
        self._events: deque[AgentEvent] = deque(maxlen=limit)
        self._seq = 0

    def add(
        self, type_: str, reason: str, message: str, container: str = "", now: float | None = None
    ) -> AgentEvent:
        """Record an event (or count it on an identical recent one); returns the entry."""
        at = time.time() if now is None else now
        for i, old in enumerate(self._events):
            same = (old.type, old.reason, old.message, old.container) == (type_, reason, message, container)
            if same and at - old.last <= AGGREGATE_SECONDS:
                new = replace(old, count=old.count + 1, last=at)
                self._events[i] = new
                return new
        self._seq += 1
        event = AgentEvent(self._seq, type_, reason, message, container, 1, at, at)
        self._events.append(event)
        return event

    def recent(self) -> tuple[AgentEvent, ...]:
        return tuple(self._events)

    def clear(self) -> None:
        """A new pod: its events start over (sequence numbers keep increasing)."""
        self._events.clear()
