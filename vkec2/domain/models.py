"""Domain models shared by the producer and the workers: the pod record and status events.

A :class:`PodRecord` is the working copy of one pod in Redis (one hash per pod UID); it holds the
desired spec written by the producer and the lifecycle state written by workers. A
:class:`StatusEvent` is what a worker appends to the node's status outbox for the producer to turn
into a ``pods/status`` write and an Event. Both convert to and from flat string maps, the shape
Redis hashes and stream entries have. The rules about phases live in :mod:`vkec2.domain.phases`
(its :class:`~vkec2.domain.phases.Phase` is re-exported here, as every record and event carries one).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from vkec2.domain import phases
from vkec2.domain.instances import slim, type_and_zone
from vkec2.domain.phases import Phase as Phase  # records and events carry it; re-exported
from vkec2.domain.times import rfc3339


def now() -> float:
    return time.time()


def condition(
    kind: str, ok: bool | None, reason: str = "", message: str = "", at: float | None = None
) -> dict[str, Any]:
    """A pod condition as the producer writes it to ``status.conditions`` (``at``: now when None;
    ``ok`` None: status Unknown)."""
    return {
        "type": kind,
        "status": "Unknown" if ok is None else "True" if ok else "False",
        "reason": reason,
        "message": message,
        "lastTransitionTime": rfc3339(now() if at is None else at),
    }


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


@dataclass
class PodRecord:
    """One pod as the fleet knows it. JSON-valued fields are kept decoded here."""

    uid: str
    namespace: str = ""
    name: str = ""
    node: str = ""
    spec: dict[str, Any] = field(default_factory=dict)
    generation: int = 0
    deleted: bool = False
    rebuilt: bool = False  # re-created by the producer after Redis lost its data (row C27)
    phase: Phase = Phase.PENDING
    reason: str = ""
    message: str = ""
    fence: int = 0
    attempt: int = 0
    instance: dict[str, Any] = field(default_factory=dict)
    instance_id: str = ""
    endpoint: str = ""
    launched_at: float = 0.0
    launch_token: str = ""  # ClientToken of a RunInstances this attempt sent (the launch intent)
    launch_batch: str = ""  # the launch batch this attempt joined (vkec2.fleet.batchlaunch)
    launch_slot: float = 0.0  # when this attempt's reserved RunInstances tokens exist
    running_at: float = 0.0  # when the instance was seen running (phase Booting), for metrics
    launching_at: float = 0.0  # when the agent accepted the workload (phase Launching), for metrics
    finished_at: float = 0.0  # when the workload ended (Succeeded or Failed), for the keep-alive
    released_at: float = 0.0  # when a finished pod's instance was released (terminated)
    deletion_grace: float | None = None  # the delete's grace period (the producer's, with the mark)
    grace_deadline: float = 0.0  # when the delete's grace period ends (TerminateApplication sent)
    next_task: str = ""
    capacity_since: float = 0.0  # when the pod began waiting for EC2 capacity (vkec2.fleet.capacity)
    host_pool: str = ""  # the host pool of its Dedicated Host (vkec2.fleet.placement)
    host_id: str = ""  # the Dedicated Host it holds a slot on
    conditions: list[dict[str, Any]] = field(default_factory=list)
    container_statuses: list[dict[str, Any]] = field(default_factory=list)
    health: dict[str, Any] = field(default_factory=dict)
    agent_events: str = ""  # INSTANCE_ID:SEQ of the last agent event forwarded (vkec2.domain.appsync)
    created_at: float = 0.0
    updated_at: float = 0.0

    _JSON = frozenset({"spec", "instance", "conditions", "container_statuses", "health"})
    _LISTS = frozenset({"conditions", "container_statuses"})
    _INT = frozenset({"generation", "fence", "attempt"})
    _FLOAT = frozenset(
        {
            "launched_at",
            "launch_slot",
            "running_at",
            "launching_at",
            "finished_at",
            "released_at",
            "grace_deadline",
            "capacity_since",
            "created_at",
            "updated_at",
        }
    )

    @classmethod
    def from_hash(cls, raw: dict[str, str]) -> PodRecord:
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in raw:
                continue
            value = raw[f.name]
            if f.name in cls._JSON:
                kwargs[f.name] = json.loads(value) if value else ([] if f.name in cls._LISTS else {})
            elif f.name in cls._INT:
                kwargs[f.name] = int(value or 0)
            elif f.name in cls._FLOAT:
                kwargs[f.name] = float(value or 0)
            elif f.name in ("deleted", "rebuilt"):
                kwargs[f.name] = value == "1"
            elif f.name == "deletion_grace":
                kwargs[f.name] = float(value) if value not in ("", "None") else None
            elif f.name == "phase":
                kwargs[f.name] = Phase(value) if value else Phase.PENDING
            else:
                kwargs[f.name] = value
        return cls(**kwargs)

    @staticmethod
    def encode(values: dict[str, Any]) -> dict[str, str]:
        """Encode a partial record (field -> Python value) into hash field values."""
        out: dict[str, str] = {}
        for key, value in values.items():
            if key == "instance":  # only what the fleet reads of the description (instances.slim)
                out[key] = _dump(slim(value) if isinstance(value, Mapping) else value)
            elif key in PodRecord._JSON:
                out[key] = _dump(value)
            elif key in ("deleted", "rebuilt"):
                out[key] = "1" if value else "0"
            else:
                out[key] = str(value)
        return out

    @property
    def instance_type(self) -> str:
        """The instance's type as EC2 described it ("" before the launch)."""
        return str(self.instance.get("InstanceType") or "")

    @property
    def private_ip(self) -> str:
        return str(self.instance.get("PrivateIpAddress", ""))

    @property
    def done(self) -> bool:
        """Deleted and Terminated: the record may be forgotten (:func:`vkec2.domain.phases.done`)."""
        return phases.done(self.phase, self.deleted)

    @property
    def deleting(self) -> bool:
        """A delete is under way (:func:`vkec2.domain.phases.deleting`)."""
        return phases.deleting(self.phase, self.deleted)

    @property
    def restart_policy(self) -> str:
        return str(self.spec.get("spec", {}).get("restartPolicy") or "Always")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["phase"] = self.phase.value
        return d


@dataclass
class StatusEvent:
    """One entry of a node's status outbox: the pod's status now, and an Event to emit."""

    uid: str
    namespace: str
    name: str
    phase: Phase
    reason: str = ""
    message: str = ""
    event_type: str = "Normal"  # Normal | Warning
    instance_id: str = ""
    pod_ip: str = ""
    conditions: list[dict[str, Any]] = field(default_factory=list)
    container_statuses: list[dict[str, Any]] = field(default_factory=list)
    ts: float = field(default_factory=now)
    instance_type: str = ""  # of the pod's instance, as EC2 describes it
    zone: str = ""  # its Availability Zone

    @classmethod
    def of(
        cls,
        rec: PodRecord,
        phase: Phase,
        *,
        reason: str = "",
        message: str = "",
        warning: bool = False,
        conditions: list[dict[str, Any]] | None = None,
    ) -> StatusEvent:
        """The event that reports ``rec`` in ``phase`` (an Event of type Warning when ``warning``)."""
        instance_type, zone = type_and_zone(rec.instance)
        return cls(
            uid=rec.uid,
            namespace=rec.namespace,
            name=rec.name,
            phase=phase,
            reason=reason,
            message=message,
            event_type="Warning" if warning else "Normal",
            instance_id=rec.instance_id,
            pod_ip=rec.private_ip,
            conditions=rec.conditions if conditions is None else conditions,
            container_statuses=rec.container_statuses,
            instance_type=instance_type,
            zone=zone,
        )

    def to_fields(self) -> dict[str, str]:
        return {
            "uid": self.uid,
            "namespace": self.namespace,
            "name": self.name,
            "phase": self.phase.value,
            "reason": self.reason,
            "message": self.message,
            "event_type": self.event_type,
            "instance_id": self.instance_id,
            "pod_ip": self.pod_ip,
            "conditions": _dump(self.conditions),
            "container_statuses": _dump(self.container_statuses),
            "ts": repr(self.ts),
            "instance_type": self.instance_type,
            "zone": self.zone,
        }

    @classmethod
    def from_fields(cls, raw: dict[str, str]) -> StatusEvent:
        return cls(
            uid=raw["uid"],
            namespace=raw.get("namespace", ""),
            name=raw.get("name", ""),
            phase=Phase(raw["phase"]),
            reason=raw.get("reason", ""),
            message=raw.get("message", ""),
            event_type=raw.get("event_type", "Normal"),
            instance_id=raw.get("instance_id", ""),
            pod_ip=raw.get("pod_ip", ""),
            conditions=json.loads(raw.get("conditions") or "[]"),
            container_statuses=json.loads(raw.get("container_statuses") or "[]"),
            ts=float(raw.get("ts") or 0),
            instance_type=raw.get("instance_type", ""),
            zone=raw.get("zone", ""),
        )


@dataclass(frozen=True)
class DueStep:
    """A pod step in flight that is late: the task to publish again, with what it needs.

    ``task`` is the pod task's wire name (create or delete), ``generation`` the one the step was
    sent for (None when unknown), ``resumes`` how often it was published again without progress.
    """

    uid: str
    task: str
    generation: int | None = None
    resumes: int = 0

    def to_json(self) -> str:
        return json.dumps({"task": self.task, "generation": self.generation, "resumes": self.resumes})

    @classmethod
    def from_json(cls, uid: str, raw: str) -> DueStep:
        doc = json.loads(raw)
        generation = doc.get("generation")
        generation = None if generation is None else int(generation)
        return cls(uid, str(doc["task"]), generation, int(doc.get("resumes", 0)))
