"""Final pod deletion: remove the pod object once the fleet is done with it, and never sooner than needed.

A pod with a ``deletionTimestamp`` stays in the API until its node says it is gone. The producer
deletes it (``gracePeriodSeconds=0`` with a UID precondition, so a newer pod of the same name is
never hit) when the fleet reports the pod Terminated, or at once when none of the pod's containers
ever ran (nothing to wait for; the fleet still cleans up any instance it was provisioning). If the
fleet is unreachable the pod's own grace period bounds the wait: :meth:`Deleter.sweep` removes
tracked pods whose ``deletionTimestamp`` (the API server's "now + grace") has passed, keeping the
Redis record (marked deleted) so the workers still terminate the instance when they can; the record
is forgotten when its Terminated status arrives with no pod object left.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from producer.kube import Kube, KubeError
from vkec2.domain.models import PodRecord
from vkec2.domain.phases import may_have_started
from vkec2.domain.times import parse_rfc3339
from vkec2.store.redis_store import Store

log = logging.getLogger(__name__)


def _state_ran(status: Mapping[str, Any]) -> bool:
    state = status.get("state") or {}
    last = status.get("lastState") or {}
    return "running" in state or "terminated" in state or "terminated" in last or bool(status.get("started"))


def containers_ran(pod: Mapping[str, Any], record: PodRecord | None) -> bool:
    """True if any container of the pod ever ran, as far as Kubernetes or the fleet knows."""
    status = pod.get("status") or {}
    for key in ("containerStatuses", "initContainerStatuses"):
        if any(_state_ran(s) for s in status.get(key) or []):
            return True
    if record is None:
        return False
    if any(_state_ran(s) for s in record.container_statuses):
        return True
    return may_have_started(record.phase, bool(record.endpoint))


class Deleter:
    """Deletes finished pod objects and enforces the grace-period bound on pods being deleted."""

    def __init__(self, kube: Kube, store: Store, slack: float = 0.0) -> None:
        self.kube = kube
        self.store = store
        self.slack = slack
        self._lock = threading.Lock()
        self._tracked: dict[str, tuple[str, str, float]] = {}  # uid -> (namespace, name, deadline)
        self.deleted = 0

    def delete_object(self, pod: Mapping[str, Any]) -> bool:
        """Remove the pod object now (grace 0, UID precondition); False if it was already gone."""
        meta = pod["metadata"]
        uid = str(meta["uid"])
        done = self.kube.delete_pod(str(meta.get("namespace", "default")), str(meta["name"]), uid, 0)
        with self._lock:
            self._tracked.pop(uid, None)
            self.deleted += int(done)
        if done:
            log.info("deleted pod %s/%s (%s)", meta.get("namespace"), meta["name"], uid)
        return done

    def finish(self, pod: Mapping[str, Any], record: PodRecord | None) -> None:
        """The fleet is done with the pod: remove the object, then forget the record."""
        self.delete_object(pod)
        if record is not None:
            self.store.forget(record.uid)

    def track(self, pod: Mapping[str, Any]) -> None:
        """Remember a pod being deleted, to remove it when its grace period has run out."""
        meta = pod["metadata"]
        deadline = parse_rfc3339(str(meta.get("deletionTimestamp", "")))
        if deadline is None:
            grace = int(meta.get("deletionGracePeriodSeconds") or 30)
            deadline = time.time() + grace
        with self._lock:
            self._tracked[str(meta["uid"])] = (
                str(meta.get("namespace", "default")),
                str(meta["name"]),
                deadline + self.slack,
            )

    def untrack(self, uid: str) -> None:
        with self._lock:
            self._tracked.pop(uid, None)

    def tracked(self) -> set[str]:
        with self._lock:
            return set(self._tracked)

    def sweep(self, now: float | None = None) -> list[str]:
        """Delete tracked pods whose grace period ended; returns their UIDs."""
        now = time.time() if now is None else now
        with self._lock:
            due = [(uid, ns, name) for uid, (ns, name, deadline) in self._tracked.items() if deadline <= now]
        done = []
        for uid, ns, name in due:
            log.warning(
                "pod %s/%s: grace period over before the fleet reported it terminated; "
                "removing the pod object (the fleet still cleans up its instance)",
                ns,
                name,
            )
            try:
                self.delete_object({"metadata": {"uid": uid, "namespace": ns, "name": name}})
            except KubeError as exc:
                log.warning("pod %s/%s not deleted yet: %s", ns, name, exc)
                continue
            done.append(uid)
        return done
