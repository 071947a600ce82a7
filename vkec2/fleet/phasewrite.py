"""The one writer of a pod's phase: timestamps, the fleet's conditions, the status event, metrics, log.

:func:`record_phase` is what every lifecycle step (:mod:`vkec2.fleet.lifecycle`, and the teardown,
rebuild and update steps it hands it to as a :class:`~vkec2.fleet.teardown.Recorder`) calls to move
a pod to a phase: it sets the phase's timestamps and the ``InstanceReady`` and ``AgentConnected``
conditions (with the placement note, or the release note of a finished pod's instance), merges the
agent's conditions and container statuses, and writes the fields and the status event for the
producer in one fenced write under the pod's lock.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

from vkec2.contract import AGENT_CONNECTED, INSTANCE_READY
from vkec2.domain import phases
from vkec2.domain.agents import AppStatus
from vkec2.domain.models import Phase, PodRecord, StatusEvent, condition, now
from vkec2.fleet.capacity import settle_conditions
from vkec2.fleet.choice import placement_note
from vkec2.fleet.teardown import RELEASED, released_message
from vkec2.observability import logs, metrics
from vkec2.ports import PodLock

log = logging.getLogger("vkec2.fleet.lifecycle")


def record_phase(
    lock: PodLock,
    rec: PodRecord,
    phase: Phase,
    *,
    reason: str = "",
    message: str = "",
    warning: bool = False,
    status: AppStatus | None = None,
    extra_conditions: Sequence[dict[str, Any]] = (),
    keep_status: bool = False,
    **values: Any,
) -> None:
    """Write the new phase (and fields) and tell the producer, in one atomic write.

    This is the one place that writes a phase, with its side effects: phase timestamps, the
    fleet's conditions, the status event, metrics and the log line. ``status`` (the agent's)
    replaces the conditions and container statuses; ``keep_status`` keeps the record's reason,
    message, agent conditions and container statuses (``reason`` and ``message`` then only
    go to the event), as when a finished pod's instance is released.
    """
    previous, at = rec.phase, now()
    values = {**phases.phase_stamps(previous, phase, at), **values}
    for key, value in values.items():
        setattr(rec, key, value)
    kept = [c for c in rec.conditions if c.get("type") not in (INSTANCE_READY, AGENT_CONNECTED)]
    rec.phase = phase
    if not keep_status:
        rec.reason, rec.message = reason, message
    released = phase.final and bool(rec.released_at) and phase is not Phase.TERMINATED
    note = (RELEASED, released_message(rec.instance_id)) if released else placement_note(rec.instance)
    conditions = [
        condition(
            INSTANCE_READY,
            phase in (Phase.BOOTING, Phase.LAUNCHING, Phase.RUNNING)
            or (phase.final and bool(rec.instance_id) and phase is not Phase.TERMINATED and not released),
            *note,
        ),
        condition(AGENT_CONNECTED, phase in (Phase.LAUNCHING, Phase.RUNNING)),
    ]
    if status is not None:
        conditions += status.conditions
        rec.container_statuses = status.container_statuses
    elif keep_status:
        conditions += kept
    conditions += settle_conditions(rec.conditions, extra_conditions, rec.instance_id)
    rec.conditions = conditions
    event = StatusEvent.of(rec, phase, reason=reason, message=message, warning=warning, conditions=conditions)
    fields = {
        "phase": phase.value,
        "reason": rec.reason,
        "message": rec.message,
        "conditions": conditions,
        "container_statuses": rec.container_statuses,
        **values,
    }
    lock.write(fields, event, rec.node)
    metrics.pod_transition(rec, previous, at)
    if phase is not previous:
        detail = " ".join(part for part in (reason, message) if part)
        # The agent's endpoint may have been learnt in this very step (after the task bound its context).
        with logs.bound(endpoint=rec.endpoint) if rec.endpoint else nullcontext():
            log.info("phase %s -> %s: %s", previous.value, phase.value, detail)
