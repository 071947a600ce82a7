"""What a Running pod's record takes from its agent's status: container statuses, conditions, new events.

Pure logic for the health sweep. The agent's status changes while a pod runs (a readiness probe
turns a container NotReady, a liveness probe restarts it); :func:`status_sync` compares the status
with the record and returns what to write: the agent's container statuses, its pod conditions
(:data:`~vkec2.contract.AGENT_POD_CONDITIONS`, merged by type into the record's, the fleet's own
conditions left alone) and the agent events (``PodStatus.events``: probe ``Unhealthy`` and
``Killing``) whose sequence number is above the last one forwarded. The record remembers that
number as ``agent_events`` (``INSTANCE_ID:SEQ``), so a replacement instance's agent, whose numbers
start over, is read from its first event. None means nothing changed: a steady pod costs no write.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vkec2.contract import AGENT_POD_CONDITIONS, MAX_FORWARDED_AGENT_EVENTS
from vkec2.domain.agents import AppStatus


@dataclass(frozen=True)
class StatusSync:
    """The record fields to write and the agent events to forward (oldest first)."""

    conditions: list[dict[str, Any]]
    container_statuses: list[dict[str, Any]]
    agent_events: str
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def status_changed(self) -> bool:
        return bool(self.conditions or self.container_statuses)


def last_forwarded(marker: str, instance_id: str) -> int:
    """The last event sequence number forwarded from ``instance_id``'s agent (0: none yet)."""
    iid, _, seq = marker.rpartition(":")
    if iid != instance_id or not seq.isdigit():
        return 0
    return int(seq)


def merge_agent_conditions(
    current: list[dict[str, Any]], agent: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """``current`` with the agent's pod conditions replaced (or appended) by type, in place order."""
    theirs = {str(c.get("type")): c for c in agent if c.get("type") in AGENT_POD_CONDITIONS}
    merged = [dict(theirs.pop(str(c.get("type")), c)) for c in current]
    return merged + [dict(c) for c in theirs.values()]


def status_sync(
    conditions: list[dict[str, Any]],
    container_statuses: list[dict[str, Any]],
    marker: str,
    instance_id: str,
    status: AppStatus,
) -> StatusSync | None:
    """What to write for a Running pod whose agent reports ``status``; None when nothing changed.

    ``conditions``/``container_statuses`` in the result are empty when they did not change.
    """
    merged = merge_agent_conditions(conditions, status.conditions)
    new_conditions = merged if merged != conditions else []
    new_statuses = status.container_statuses if status.container_statuses != container_statuses else []
    last = last_forwarded(marker, instance_id)
    fresh = sorted((e for e in status.events if int(e.get("seq", 0)) > last), key=lambda e: int(e["seq"]))
    if not (new_conditions or new_statuses or fresh):
        return None
    seq = max([last, *(int(e["seq"]) for e in fresh)])
    return StatusSync(
        new_conditions,
        [dict(s) for s in new_statuses],
        f"{instance_id}:{seq}",
        [dict(e) for e in fresh[-MAX_FORWARDED_AGENT_EVENTS:]],
    )
