"""The health sweep's write of a Running pod's changed agent status: readiness, restarts and probe events.

While a pod runs, only the health sweep talks to its agent. When the agent's container statuses or
pod conditions differ from the record, or it reports events the fleet has not forwarded yet
(:mod:`vkec2.domain.appsync`), :func:`write_status` writes them under the pod's lock and appends
one status outbox entry per new event (``Unhealthy``/``Killing``, as the kubelet records them); a
change without an event (a container turning Ready again) is sent as a status-only entry
(:data:`~vkec2.contract.STATUS_ONLY_EVENT`) so the producer updates ``pods/status`` without an Event.
None of this is a health failure: a NotReady container never makes the sweep replace the instance.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from vkec2.contract import STATUS_ONLY_EVENT
from vkec2.domain.agents import AppStatus
from vkec2.domain.appsync import status_sync
from vkec2.domain.models import PodRecord, StatusEvent
from vkec2.ports import PodLock


def running(status: AppStatus | None) -> AppStatus | None:
    """``status`` when it is a running workload's (the only kind whose status the sweep copies)."""
    return status if status is not None and status.phase == "Running" else None


def differs(rec: PodRecord, status: AppStatus | None) -> bool:
    """Whether ``status`` has anything for ``rec`` (checked before taking the lock)."""
    status = running(status)
    if status is None:
        return False
    sync = status_sync(rec.conditions, rec.container_statuses, rec.agent_events, rec.instance_id, status)
    return sync is not None


def write_status(lock: PodLock, rec: PodRecord, status: AppStatus | None) -> None:
    """Write what changed of ``status`` into ``rec`` (and the record), with its outbox entries."""
    status = running(status)
    if status is None:
        return
    sync = status_sync(rec.conditions, rec.container_statuses, rec.agent_events, rec.instance_id, status)
    if sync is None:
        return
    values: dict[str, Any] = {"agent_events": sync.agent_events}
    if sync.conditions:
        rec.conditions = values["conditions"] = sync.conditions
    if sync.container_statuses:
        rec.container_statuses = values["container_statuses"] = sync.container_statuses
    events = [
        StatusEvent.of(
            rec,
            rec.phase,
            reason=str(e.get("reason") or ""),
            message=_message(e),
            warning=e.get("type") == "Warning",
        )
        for e in sync.events
    ]
    if not events and sync.status_changed:
        events = [replace(StatusEvent.of(rec, rec.phase), event_type=STATUS_ONLY_EVENT)]
    lock.write(values, events[0] if events else None, rec.node)
    for event in events[1:]:
        lock.write({}, event, rec.node)
    rec.agent_events = sync.agent_events


def _message(event: dict[str, Any]) -> str:
    """The event's message, with how often the agent saw it when it repeated before it was forwarded."""
    message = str(event.get("message") or "")
    count = int(event.get("count") or 1)
    return f"{message} (x{count})" if count > 1 else message
