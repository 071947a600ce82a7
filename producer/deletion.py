"""Final pod deletion: remove the pod object only once the fleet reports its instance gone.

A pod with a ``deletionTimestamp`` stays in the API until its node says it is gone, the kubelet's
contract. The producer deletes it (``gracePeriodSeconds=0`` with a UID precondition, so a newer pod
of the same name is never hit) when the fleet reports the pod Terminated, that is after its
instance was terminated — however long the workers take, as long as they are alive. Only when the
node is NotReady (no worker answers, Redis is unreachable or the outbox stalls: the heartbeat's
health, handed in as ``fleet_alive``) does the pod's own grace period bound the wait:
:meth:`Deleter.sweep` then removes tracked pods whose ``deletionTimestamp`` (the API server's "now +
grace") has passed, keeping the Redis record (marked deleted, its delete task queued) so the
workers terminate the instance when they return; the record is forgotten when its Terminated
status arrives with no pod object left. A pod with no record at all is removed at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
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
    """Deletes finished pod objects; bounds the wait by the grace period only while the node is down."""

    def __init__(
        self, kube: Kube, store: Store, slack: float = 0.0, fleet_alive: Callable[[], bool] | None = None
    ) -> None:
        self.kube = kube
        self.store = store
        self.slack = slack
        #: True while the node is Ready (workers alive): no pod object is removed before Terminated.
        self.fleet_alive: Callable[[], bool] = fleet_alive or (lambda: False)
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
        """While the node is NotReady, delete tracked pods whose grace period ended; returns their UIDs."""
        now = time.time() if now is None else now
        if self.fleet_alive():
            return []  # the workers will report Terminated: the object waits for its instance
        with self._lock:
            due = [(uid, ns, name) for uid, (ns, name, deadline) in self._tracked.items() if deadline <= now]
        done = []
        for uid, ns, name in due:
            log.warning(
                "pod %s/%s: grace period over and the node is NotReady (no worker alive); "
                "removing the pod object (the fleet still terminates its instance when it is back)",
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
