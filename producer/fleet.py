"""The producer's side of the fleet contract: write the desired state to Redis, then publish the task.

Every pod change the producer learns about (from the Kubernetes watch or from a manifest
directory) goes through :class:`FleetLink`, which keeps the one ordering rule of the fleet: the
Redis record is written first (desired spec, or the delete mark, each bumping the record's
generation) and only then is ``vkec2.pods.create`` / ``update`` / ``delete`` published by name
with that generation, so a worker that receives the task always finds what it is asked to do.
With :attr:`FleetLink.content` set, a pod that references ConfigMaps/Secrets is resolved and sealed
first (:mod:`producer.content`); one whose references are missing is not written yet.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from celery import Celery

if TYPE_CHECKING:
    from producer.content import PodContent

from vkec2 import contract
from vkec2.errors import Vkec2Error
from vkec2.store.redis_store import Store

log = logging.getLogger(__name__)


class FleetLink:
    """Desired state and tasks for the pods of one node."""

    def __init__(self, store: Store, app: Celery, node: str) -> None:
        self.store = store
        self.app = app
        self.node = node
        self.content: PodContent | None = None

    def _send(self, name: str, uid: str, generation: int) -> None:
        self.app.send_task(name, kwargs=contract.pod_task_kwargs(uid, generation))

    def create(self, pod: Mapping[str, Any], *, rebuilt: bool = False) -> int | None:
        """Record the pod's desired spec and publish a create; None when the UID is still being deleted.

        ``rebuilt``: the pod comes from a full list, so Redis may have lost its record; a record
        created now is flagged for row C27 (its first step looks up what EC2 knows of the pod).
        """
        return self._put(pod, contract.POD_CREATE, rebuilt)

    def update(self, pod: Mapping[str, Any], *, prepared: bool = False) -> int | None:
        """Record a changed spec and publish an update (``prepared``: its content is sealed already)."""
        return self._put(pod, contract.POD_UPDATE, prepared=prepared)

    def _put(
        self, pod: Mapping[str, Any], task: str, rebuilt: bool = False, prepared: bool = False
    ) -> int | None:
        if self.content is not None and not prepared:
            ready = self.content.prepare(pod)
            if ready is None:
                return None  # waits for its ConfigMaps/Secrets; PodContent tries again
            pod = ready
        uid = str(pod["metadata"]["uid"])
        try:
            generation = self.store.put_desired(pod, self.node, rebuilt=rebuilt)
        except Vkec2Error as exc:
            if exc.reason != "PodTerminating":
                raise
            log.info("pod %s is still being deleted; not desiring it again yet", uid)
            return None
        self._send(task, uid, generation)
        return generation

    def delete(self, uid: str, grace_seconds: float | None = None) -> int | None:
        """Mark the record deleted and publish a delete; None when there is no record.

        ``grace_seconds`` is the pod object's ``deletionGracePeriodSeconds`` (``kubectl delete
        --grace-period``), recorded with the mark so the workers give the workload exactly that.
        """
        self.forget_content(uid)
        generation = self.store.mark_deleted(uid, grace_seconds)
        if generation is None:
            return None
        self._send(contract.POD_DELETE, uid, generation)
        return generation

    def forget_content(self, uid: str) -> None:
        """Stop resolving and refreshing the pod's ConfigMaps/Secrets (it is going away)."""
        if self.content is not None:
            self.content.forget(uid)
