"""This node's pods as the kubelet API sees them: lookup by name, the agent to dial, the ``/pods`` view.

Pods are found among the node's Redis records (a name being replaced prefers the live record, then
the newest); a container request is checked against the pod's containers and resolved to the
record's agent (``endpoint`` and ``instance_id``). :func:`pod_object` is a record as ``/pods``
reports it: the desired object with the status the fleet reports, computed as for ``pods/status``.
:class:`PodStreams` is what the streaming endpoints (logs, exec) need of the server that owns them.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from producer.kubelet.duplex import Duplex
from producer.kubelet.wire import HttpError, bad_request
from vkec2.agent_client.client import AgentClient
from vkec2.contract import RESOLVED_FIELD
from vkec2.domain.agents import AgentTarget
from vkec2.domain.models import PodRecord


class PodStreams(Protocol):
    """The kubelet server as a streaming endpoint sees it: find the pod, dial its agent, track the stream."""

    def find(self, namespace: str, name: str, uid: str | None = None) -> PodRecord:
        """The node's pod by name (and UID when given); an HTTP 404 when there is none."""
        ...

    def target(self, record: PodRecord, container: str) -> AgentTarget:
        """The agent serving ``container`` of the pod; an HTTP error when there is none."""
        ...

    def agent_client(self) -> AgentClient:
        """A fresh client (one channel) for one stream."""
        ...

    def track(self, duplex: Duplex, on: bool) -> None:
        """Register (``on``) or forget an open stream, so that stopping the server ends it."""
        ...


def container_names(pod: Mapping[str, Any]) -> list[str]:
    """Names of the pod's init, regular and ephemeral containers."""
    spec = pod.get("spec") or {}
    kinds = ("initContainers", "containers", "ephemeralContainers")
    return [str(c.get("name")) for kind in kinds for c in spec.get(kind) or [] if c.get("name")]


def find_record(
    records: Iterable[PodRecord], node: str, namespace: str, name: str, uid: str | None = None
) -> PodRecord:
    """The record of ``namespace/name`` (and ``uid`` if given) on ``node``; a 404 if there is none."""
    matches = [
        r for r in records if r.namespace == namespace and r.name == name and (uid is None or r.uid == uid)
    ]
    if not matches:
        raise HttpError(404, "NotFound", f'pod "{namespace}/{name}" not found on node {node}')
    # A pod being replaced under the same name: the live one first, then the newest.
    matches.sort(key=lambda r: (not r.deleted, r.created_at), reverse=True)
    return matches[0]


def agent_target(record: PodRecord, container: str) -> AgentTarget:
    """The agent running ``container`` of the pod; a 400 for an unknown container or no instance yet."""
    names = container_names(record.spec)
    if container not in names:
        raise bad_request(
            f'container "{container}" is not valid for pod "{record.name}": choose one of {names}'
        )
    if not record.endpoint or not record.instance_id:
        raise bad_request(
            f'container "{container}" in pod "{record.name}" is waiting to start: '
            f"the pod is {record.phase.value} and has no running instance yet"
        )
    return AgentTarget(record.endpoint, record.instance_id)


def pod_object(record: PodRecord) -> dict[str, Any]:
    """The pod as this node reports it: the desired object with the fleet's status."""
    from producer.status import FleetView, build_status

    pod: dict[str, Any] = copy.deepcopy(record.spec) if record.spec else {"apiVersion": "v1", "kind": "Pod"}
    pod.pop(RESOLVED_FIELD, None)  # the sealed ConfigMap/Secret content is no part of the pod object
    meta: dict[str, Any] = pod.setdefault("metadata", {})
    meta.setdefault("name", record.name)
    meta.setdefault("namespace", record.namespace or "default")
    meta.setdefault("uid", record.uid)
    view = FleetView(
        record.phase,
        record.reason,
        record.message,
        record.instance_id,
        record.private_ip,
        list(record.conditions),
        list(record.container_statuses),
        record.updated_at,
    )
    pod["status"] = build_status(pod, view, record.created_at or time.time())
    return pod


def pod_list(records: Iterable[PodRecord]) -> dict[str, Any]:
    """The v1 ``PodList`` of ``/pods``."""
    return {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [pod_object(r) for r in records]}
