"""Status back to Kubernetes: turn a status outbox entry into a ``pods/status`` write and an Event.

The pure functions here compute a pod's new ``status`` from its current one and the fleet's view
of the pod (the Redis record when there is one, else the event itself — so an entry re-delivered
late never rolls the pod back): the Kubernetes phase (never regressing from Succeeded or Failed),
pod and host IP (the instance's private IP), the fleet conditions ``vkec2.io/InstanceReady`` and
``vkec2.io/AgentConnected`` merged by type into whatever conditions are already there, and
``ContainersReady``/``Ready`` computed the way the kubelet does with readiness gates (Ready only
when the containers are ready and every gate in ``spec.readinessGates`` is True).
:class:`KubeStatusSink` is the outbox handler that writes it with the pod's current
resourceVersion (retrying on 409), sets the ``compute.amazonaws.com/instance-id``,
``vkec2.io/instance-type`` and ``vkec2.io/zone`` annotations (what EC2 says the instance is),
records an Event per entry (Warning for failures) and hands finished pods to the deleter. It also
tells the outbox consumer which failures are transient (the API server unreachable, 429, 5xx: no
count towards the dead letter) and records a Warning Event ``StatusUpdateRefused`` on a pod whose
entry was dead-lettered (best effort). :meth:`KubeStatusSink.resync` is the periodic heal: from one
list of the node's pods and the Redis records it rewrites every pod whose status (or instance
annotations) differs from what its record says — the same path as an entry, without an Event — so a
dead-lettered, superseded, trimmed or lost entry never leaves a pod's status behind, and a pod
that is up to date costs no write.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from producer.deletion import Deleter
from producer.kube import Kube, KubeError, Obj
from vkec2.contract import (
    INSTANCE_ID_ANNOTATION,
    INSTANCE_TYPE_ANNOTATION,
    STATUS_ONLY_EVENT,
    ZONE_ANNOTATION,
)
from vkec2.domain.instances import type_and_zone
from vkec2.domain.models import Phase, PodRecord, StatusEvent
from vkec2.domain.phases import K8S_FINISHED
from vkec2.domain.times import rfc3339
from vkec2.observability.metrics import STATUS_RESYNC_WRITES
from vkec2.store.redis_store import Store

log = logging.getLogger(__name__)

COMPONENT = "vkec2-producer"
CONFLICT_RETRIES = 5
#: Conditions the producer computes itself (whatever a worker or agent sent for them is ignored).
COMPUTED = frozenset({"Ready", "ContainersReady"})
#: The Event reason on a pod whose status entry was dead-lettered.
REFUSED_REASON = "StatusUpdateRefused"


@dataclass
class FleetView:
    """What the fleet says about a pod right now."""

    phase: Phase
    reason: str = ""
    message: str = ""
    instance_id: str = ""
    pod_ip: str = ""
    conditions: list[dict[str, Any]] = field(default_factory=list)
    container_statuses: list[dict[str, Any]] = field(default_factory=list)
    ts: float = 0.0
    instance_type: str = ""
    zone: str = ""

    @classmethod
    def of(cls, event: StatusEvent, record: PodRecord | None) -> FleetView:
        """The record's current state when there is a record (it is never stale), else the event's."""
        if record is None:
            return cls(
                event.phase,
                event.reason,
                event.message,
                event.instance_id,
                event.pod_ip,
                list(event.conditions),
                list(event.container_statuses),
                event.ts,
                event.instance_type,
                event.zone,
            )
        return cls(
            record.phase,
            record.reason,
            record.message,
            record.instance_id,
            record.private_ip or (event.pod_ip if event.instance_id == record.instance_id else ""),
            list(record.conditions),
            list(record.container_statuses),
            event.ts,
            *type_and_zone(record.instance),
        )

    def annotations(self) -> dict[str, str]:
        """The annotations that report the pod's instance: its ID, type and zone (those known)."""
        values = {
            INSTANCE_ID_ANNOTATION: self.instance_id,
            INSTANCE_TYPE_ANNOTATION: self.instance_type,
            ZONE_ANNOTATION: self.zone,
        }
        return {key: value for key, value in values.items() if value} if self.instance_id else {}


def k8s_phase(current: str | None, phase: Phase) -> str:
    """The pod phase to write: the fleet's, except that Succeeded and Failed are never left."""
    if current in K8S_FINISHED:
        return str(current)
    return phase.k8s_phase


def merge_conditions(
    current: Sequence[Mapping[str, Any]], updates: Sequence[Mapping[str, Any]], now: str
) -> list[dict[str, Any]]:
    """``current`` with ``updates`` merged in by type; a transition time moves only when the status does."""
    merged: dict[str, dict[str, Any]] = {str(c.get("type")): dict(c) for c in current if c.get("type")}
    order = [str(c.get("type")) for c in current if c.get("type")]
    for update in updates:
        kind = str(update.get("type") or "")
        if not kind:
            continue
        old = merged.get(kind)
        new = {k: v for k, v in update.items() if v not in (None, "") or k == "status"}
        new["status"] = str(update.get("status") or "Unknown")
        if old is not None and old.get("status") == new["status"]:
            new["lastTransitionTime"] = old.get("lastTransitionTime") or new.get("lastTransitionTime") or now
        else:
            new["lastTransitionTime"] = new.get("lastTransitionTime") or now
        if kind not in merged:
            order.append(kind)
        merged[kind] = new
    return [merged[k] for k in order]


def _status_of(conditions: Sequence[Mapping[str, Any]], kind: str) -> str | None:
    for cond in conditions:
        if cond.get("type") == kind:
            return str(cond.get("status"))
    return None


def readiness(
    phase: str,
    spec: Mapping[str, Any],
    conditions: Sequence[Mapping[str, Any]],
    container_statuses: Sequence[Mapping[str, Any]],
    fleet_conditions: Sequence[Mapping[str, Any]],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(ContainersReady, Ready) conditions as the kubelet computes them, readiness gates included."""
    names = [str(c.get("name")) for c in spec.get("containers") or []]
    by_name = {str(s.get("name")): s for s in container_statuses}
    if phase == "Succeeded":
        reason = "PodCompleted"
        containers_ok = False
        unready: list[str] = []
    else:
        if container_statuses:
            unready = [n for n in names or list(by_name) if not (by_name.get(n) or {}).get("ready")]
            containers_ok = phase == "Running" and not unready
        else:
            agent = _status_of(fleet_conditions, "ContainersReady")
            unready = [] if agent == "True" else names
            containers_ok = phase == "Running" and agent == "True"
        reason = "" if containers_ok else "ContainersNotReady"
    containers = {"type": "ContainersReady", "status": "True" if containers_ok else "False"}
    if not containers_ok:
        containers["reason"] = reason
        if unready:
            containers["message"] = f"containers with unready status: [{' '.join(unready)}]"
    ready = dict(containers, type="Ready")
    if containers_ok:
        problems = []
        for gate in spec.get("readinessGates") or []:
            kind = str(gate.get("conditionType", ""))
            status = _status_of(conditions, kind)
            if status is None:
                problems.append(f'corresponding condition of pod readiness gate "{kind}" does not exist.')
            elif status != "True":
                problems.append(f'the status of pod readiness gate "{kind}" is not "True", but {status}')
        if problems:
            ready = {
                "type": "Ready",
                "status": "False",
                "reason": "ReadinessGatesNotReady",
                "message": ", ".join(problems),
            }
    return containers, ready


def _container_statuses(
    spec: Mapping[str, Any], given: Sequence[Mapping[str, Any]], phase: str
) -> list[dict[str, Any]]:
    """Well-formed containerStatuses: the agent's, and a waiting entry for containers it did not report."""
    by_name = {str(s.get("name")): dict(s) for s in given if s.get("name")}
    out = []
    for container in spec.get("containers") or []:
        name = str(container.get("name"))
        status = by_name.pop(name, None)
        if status is None:
            waiting = "ContainerCreating" if phase == "Pending" else "PodInitializing"
            status = {
                "name": name,
                "state": {"waiting": {"reason": waiting}},
                "ready": False,
                "started": False,
            }
        status.setdefault("image", container.get("image", ""))
        status.setdefault("imageID", "")
        status.setdefault("restartCount", 0)
        status.setdefault("ready", False)
        status.setdefault("state", {"waiting": {}})
        out.append(status)
    return out + list(by_name.values())


def build_status(pod: Mapping[str, Any], view: FleetView, now: float) -> dict[str, Any]:
    """The pod's new ``status`` after applying the fleet's view to it."""
    status = copy.deepcopy(dict(pod.get("status") or {}))
    spec = pod.get("spec") or {}
    stamp = rfc3339(now)
    phase = k8s_phase(status.get("phase"), view.phase)
    left_terminal = status.get("phase") in K8S_FINISHED
    status["phase"] = phase
    if phase == "Failed" and not left_terminal:
        status["reason"] = view.reason or status.get("reason") or "Failed"
        status["message"] = view.message or status.get("message", "")
    elif phase not in K8S_FINISHED:
        status.pop("reason", None)
        status.pop("message", None)
    if view.pod_ip:
        status["podIP"] = view.pod_ip
        status["podIPs"] = [{"ip": view.pod_ip}]
        status["hostIP"] = view.pod_ip
        status["hostIPs"] = [{"ip": view.pod_ip}]
    status.setdefault("startTime", stamp)
    if not left_terminal:
        status["containerStatuses"] = _container_statuses(spec, view.container_statuses, phase)
    fleet = [c for c in view.conditions if c.get("type") not in COMPUTED]
    base = [{"type": "PodScheduled", "status": "True"}]
    if not any(c.get("type") == "Initialized" for c in fleet) and not any(
        c.get("type") == "Initialized" for c in status.get("conditions") or []
    ):
        base.append({"type": "Initialized", "status": "True"})
    conditions = merge_conditions(status.get("conditions") or [], [*base, *fleet], stamp)
    if not left_terminal:
        containers, ready = readiness(phase, spec, conditions, status["containerStatuses"], view.conditions)
        conditions = merge_conditions(conditions, [containers, ready], stamp)
    status["conditions"] = conditions
    return status


def event_object(
    pod: Mapping[str, Any], entry_id: str, node: str, reason: str, message: str, warning: bool, ts: float
) -> Obj:
    """A core/v1 Event about ``pod``; its name derives from the outbox entry, so a retry is idempotent."""
    meta = pod["metadata"]
    stamp = rfc3339(ts)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{str(meta['name'])[:200]}.{entry_id.replace('-', '.')}",
            "namespace": meta.get("namespace", "default"),
        },
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": meta["name"],
            "namespace": meta.get("namespace", "default"),
            "uid": meta.get("uid", ""),
            "resourceVersion": meta.get("resourceVersion", ""),
        },
        "reason": reason,
        "message": message,
        "type": "Warning" if warning else "Normal",
        "source": {"component": COMPONENT, "host": node},
        "reportingComponent": "vkec2.io/producer",
        "reportingInstance": node,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


def event_text(event: StatusEvent) -> tuple[str, str]:
    """(reason, message) of the Event for an outbox entry."""
    reason = event.reason or event.phase.value
    message = event.message or f"pod is {event.phase.value}"
    if event.instance_id and event.instance_id not in message:
        message = f"{message} (instance {event.instance_id})"
    return reason, message


def _finished(pod: Obj, view: FleetView, record: PodRecord | None) -> bool:
    """A deleted pod the fleet reports Terminated: its object is to be removed, not updated."""
    deleting = bool(pod["metadata"].get("deletionTimestamp")) or bool(record and record.deleted)
    return view.phase is Phase.TERMINATED and deleting


class KubeStatusSink:
    """The outbox handler of Kubernetes mode (a :class:`producer.outbox.StatusSink`), and the resync."""

    def __init__(self, kube: Kube, store: Store, node: str, deleter: Deleter) -> None:
        self.kube = kube
        self.store = store
        self.node = node
        self.deleter = deleter

    def __call__(self, entry_id: str, event: StatusEvent) -> None:
        record = self.store.get(event.uid)
        pod = self.kube.get_pod(event.namespace, event.name)
        if pod is None or pod["metadata"].get("uid") != event.uid:
            # The pod object is gone (or is a newer pod of the same name): only the record may be left.
            if record is not None and record.done:
                self.store.forget(event.uid)
            return
        view = FleetView.of(event, record)
        reason, message = event_text(event)
        if _finished(pod, view, record):
            self._event(pod, entry_id, reason, message, event.event_type == "Warning", event.ts)
            self.deleter.finish(pod, record)
            return
        pod, _ = self._apply(pod, view)
        if event.event_type == STATUS_ONLY_EVENT:  # a status change the kubelet records no Event for
            return
        self._event(pod, entry_id, reason, message, event.event_type == "Warning", event.ts)

    def transient(self, exc: Exception) -> bool:
        """The API server unreachable, throttling or failing: nothing wrong with the entry itself."""
        return isinstance(exc, KubeError) and (exc.status == 0 or exc.status == 429 or exc.status >= 500)

    def dead_lettered(self, entry_id: str, event: StatusEvent, reason: str) -> None:
        """A Warning Event ``StatusUpdateRefused`` on the pod, best effort (never raises)."""
        try:
            pod = self.kube.get_pod(event.namespace, event.name)
            if pod is None or pod["metadata"].get("uid") != event.uid:
                return
            message = f"status update ({event.phase.value}) given up after repeated failures: {reason}"
            self._event(pod, f"{entry_id}-dead", REFUSED_REASON, message[:1000], True, time.time())
        except Exception as exc:
            log.warning("event %s for pod %s not recorded: %s", REFUSED_REASON, event.name, exc)

    def resync(self, pods: Sequence[Obj]) -> int:
        """Rewrite each listed pod's status from its record where they differ; returns how many were written.

        A pod without a record (not the fleet's yet, or forgotten) is left alone; a failing pod is
        logged and skipped, the next resync tries again.
        """
        records = {r.uid: r for r in self.store.records(self.node)}
        written = 0
        for pod in pods:
            record = records.get(str(pod["metadata"].get("uid")))
            if record is None:
                continue
            view = FleetView.of(StatusEvent.of(record, record.phase), record)
            try:
                if _finished(pod, view, record):  # its Terminated entry never arrived
                    self.deleter.finish(pod, record)
                    wrote = True
                else:
                    _, wrote = self._apply(pod, view)
            except KubeError as exc:
                log.warning("resync of pod %s/%s failed: %s", record.namespace, record.name, exc)
                continue
            if wrote:
                written += 1
                STATUS_RESYNC_WRITES.inc()
                log.info("resync: pod %s/%s status rewritten from its record", record.namespace, record.name)
        return written

    def run_resync(self, stop: threading.Event, interval: float, ready: threading.Event) -> None:
        """Every ``interval`` seconds once ``ready`` (the first full pod list): :meth:`resync` the node."""
        while not stop.wait(interval):
            if not ready.is_set():
                continue
            try:
                pods, _ = self.kube.list_pods(self.node)
                written = self.resync(pods)
            except Exception as exc:  # the API server or Redis: the next pass tries again
                log.warning("status resync of node %s failed: %s", self.node, exc)
                continue
            log.info("status resync of node %s: %d pods listed, %d rewritten", self.node, len(pods), written)

    def _apply(self, pod: Obj, view: FleetView) -> tuple[Obj, bool]:
        """Write ``view`` to the pod (status, then the instance annotations): the pod, whether it changed."""
        pod, wrote = self._write_status(pod, view)
        have = pod["metadata"].get("annotations") or {}
        changed = {key: value for key, value in view.annotations().items() if have.get(key) != value}
        if changed:
            pod = self.kube.patch_pod(
                pod["metadata"]["namespace"],
                pod["metadata"]["name"],
                {"metadata": {"uid": pod["metadata"]["uid"], "annotations": changed}},
            )
            wrote = True
        return pod, wrote

    def _write_status(self, pod: Obj, view: FleetView) -> tuple[Obj, bool]:
        for _ in range(CONFLICT_RETRIES):
            wanted = build_status(pod, view, time.time())
            if wanted == pod.get("status"):
                return pod, False
            body = dict(pod, status=wanted)
            try:
                return self.kube.replace_pod_status(body), True
            except KubeError as exc:
                if not exc.conflict:
                    raise
            fresh = self.kube.get_pod(pod["metadata"]["namespace"], pod["metadata"]["name"])
            if fresh is None or fresh["metadata"].get("uid") != pod["metadata"].get("uid"):
                return pod, False
            pod = fresh
        raise KubeError(409, "Conflict", f"pod {pod['metadata']['name']}: status kept conflicting")

    def _event(self, pod: Obj, entry_id: str, reason: str, message: str, warning: bool, ts: float) -> None:
        try:
            self.kube.create_event(event_object(pod, entry_id, self.node, reason, message, warning, ts))
        except KubeError as exc:
            if exc.status != 409:  # 409: this entry's Event exists already (a retried entry)
                log.warning("event %s for pod %s not recorded: %s", reason, pod["metadata"]["name"], exc)
