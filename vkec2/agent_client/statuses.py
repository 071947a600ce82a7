"""The agent's PodStatus as the fleet reads it: protobuf status messages turned into :class:`AppStatus`.

:func:`app_status` converts a ``PodStatus`` (phase, conditions, container statuses with their
states, the Spot notice and the probe events the agent keeps) into the fleet's
:class:`~vkec2.domain.agents.AppStatus`, with times as RFC 3339 strings and the container statuses
in the JSON shape Kubernetes writes, so the client's calls and its watch stream read statuses alike.
"""

from __future__ import annotations

from typing import Any

from vkec2.domain.agents import AppStatus, SpotNotice
from vkec2.domain.times import rfc3339


def _time(ts: Any) -> str | None:
    return rfc3339(ts.ToDatetime()) if ts.seconds or ts.nanos else None


def _state_json(st: Any) -> dict[str, Any]:
    kind = st.WhichOneof("state")
    if kind == "waiting":
        w: dict[str, Any] = {"reason": st.waiting.reason}
        if st.waiting.message:
            w["message"] = st.waiting.message
        return {"waiting": w}
    if kind == "running":
        return {"running": {"startedAt": _time(st.running.started_at)}}
    if kind == "terminated":
        t = st.terminated
        out: dict[str, Any] = {
            "exitCode": t.exit_code,
            "reason": t.reason,
            "startedAt": _time(t.started_at),
            "finishedAt": _time(t.finished_at),
        }
        if t.signal:
            out["signal"] = t.signal
        if t.message:
            out["message"] = t.message
        return {"terminated": out}
    return {}


def _container_json(c: Any) -> dict[str, Any]:
    return {
        "name": c.name,
        "ready": c.ready,
        "restartCount": c.restart_count,
        "started": c.started,
        "image": c.image,
        "imageID": "",
        "containerID": c.container_id,
        "state": _state_json(c.state) if c.HasField("state") else {},
        "lastState": _state_json(c.last_state) if c.HasField("last_state") else {},
    }


def app_status(s: Any) -> AppStatus:
    """The :class:`AppStatus` of a ``PodStatus`` message from the agent."""
    conditions = []
    for c in s.conditions:
        cond: dict[str, Any] = {
            "type": c.type,
            "status": c.status,
            "lastTransitionTime": _time(c.last_transition_time),
        }
        if c.reason:
            cond["reason"] = c.reason
        if c.message:
            cond["message"] = c.message
        conditions.append(cond)
    return AppStatus(
        phase=s.phase,
        conditions=conditions,
        container_statuses=[_container_json(c) for c in s.container_statuses],
        reason=s.reason,
        message=s.message,
        init_container_statuses=[_container_json(c) for c in s.init_container_statuses],
        pod_ip=s.pod_ip,
        start_time=_time(s.start_time) if s.HasField("start_time") else None,
        pod_uid=s.pod_uid,
        spot_notice=(
            SpotNotice(s.spot_notice.kind, s.spot_notice.action, s.spot_notice.time)
            if s.HasField("spot_notice")
            else None
        ),
        events=[_event_json(e) for e in s.events],
    )


def _event_json(e: Any) -> dict[str, Any]:
    """A ``PodEvent`` as the fleet keeps it: seq, type, reason, message, container, count."""
    return {
        "seq": int(e.seq),
        "type": e.type or "Normal",
        "reason": e.reason,
        "message": e.message,
        "container": e.container,
        "count": int(e.count or 1),
    }
