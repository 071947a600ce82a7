"""Removing a virtual node: cordon it, delete its pods through the fleet, then forget it everywhere.

:class:`NodeDrain` is what ``vkec2 node drain NAME`` runs, and what a producer runs on its own node
when its StatefulSet is scaled down below its ordinal (on SIGTERM, decided by
:mod:`producer.scaledown`, run by :meth:`producer.main.Producer.drain_if_scaled_down`). It cordons
the Node (``spec.unschedulable`` and the ``node.kubernetes.io/unschedulable:NoSchedule`` taint, as
``kubectl cordon`` leaves it),
then deletes every pod of the node through the normal path — the record marked deleted and
``vkec2.pods.delete`` published by :class:`~producer.fleet.FleetLink`, exactly as the producer does
for a pod object being deleted — and waits, bounded, until each record is Terminated (its instance
terminated). Only then does it remove the pod objects and the Node, forget the records, and drop
the node from ``nodes`` and ``reconciled`` (so the epoch gates of :mod:`vkec2.fleet.epochgate` no
longer wait for it). A drain that times out removes nothing and says which pods are left; running
it again carries on (every step is idempotent).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from producer.fleet import FleetLink
from producer.kube import Kube, KubeError, Obj
from producer.pods import deletion_grace
from vkec2.domain.models import Phase
from vkec2.errors import Vkec2Error

log = logging.getLogger(__name__)

UNSCHEDULABLE_TAINT = {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}


@dataclass
class DrainReport:
    node: str
    pods: list[str] = field(default_factory=list)  # namespace/name of the pods deleted
    node_deleted: bool = False


class NodeDrain:
    """Drains and removes one virtual node."""

    def __init__(self, kube: Kube, link: FleetLink, clock: Callable[[], float] = time.monotonic) -> None:
        self.kube = kube
        self.link = link
        self.store = link.store
        self.node = link.node
        self.clock = clock

    def cordon(self) -> None:
        """Mark the Node unschedulable (with the taint); nothing to do when it is gone."""
        for attempt in range(3):
            node = self.kube.get_node(self.node)
            if node is None:
                return
            spec = dict(node.get("spec") or {})
            taints = [t for t in spec.get("taints") or [] if t.get("key") != UNSCHEDULABLE_TAINT["key"]]
            node = {**node, "spec": {**spec, "unschedulable": True, "taints": [*taints, UNSCHEDULABLE_TAINT]}}
            try:
                self.kube.replace_node(node)
                return
            except KubeError as exc:
                if not exc.conflict or attempt == 2:
                    raise

    def run(self, timeout: float, poll: float = 1.0) -> DrainReport:
        """Drain the node; raises :class:`Vkec2Error` (reason ``DrainTimeout``) when pods are left."""
        report = DrainReport(self.node)
        self.cordon()
        pods, _ = self.kube.list_pods(self.node)
        for pod in pods:
            meta = pod["metadata"]
            uid = str(meta["uid"])
            report.pods.append(f"{meta.get('namespace', 'default')}/{meta['name']}")
            record = self.store.get(uid)
            if record is not None and not record.deleted:
                self.link.delete(uid, deletion_grace(pod))
        for record in self.store.records(self.node):  # records whose pod object is gone already
            if not record.deleted:
                self.link.delete(record.uid)
        log.info("draining node %s: %d pod(s) being deleted", self.node, len(pods))
        deadline = self.clock() + timeout
        while True:
            left = [r for r in self.store.records(self.node) if r.phase is not Phase.TERMINATED]
            if not left:
                break
            if self.clock() >= deadline:
                names = ", ".join(f"{r.namespace}/{r.name} ({r.phase.value})" for r in left)
                raise Vkec2Error(
                    f"node {self.node}: {len(left)} pod(s) not terminated within {timeout:g}s: {names}; "
                    "nothing was removed, run the drain again to carry on",
                    reason="DrainTimeout",
                )
            time.sleep(poll)
        for pod in pods:
            self._remove(pod)
        for record in self.store.records(self.node):
            self.store.forget(record.uid)
        report.node_deleted = self.kube.delete_node(self.node)
        self.store.forget_node(self.node)
        log.info("node %s drained and removed (%d pod(s))", self.node, len(pods))
        return report

    def _remove(self, pod: Obj) -> None:
        meta = pod["metadata"]
        self.kube.delete_pod(str(meta.get("namespace", "default")), str(meta["name"]), str(meta["uid"]), 0)
