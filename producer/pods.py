"""The pod watch: list, then watch, the pods bound to this node, and turn them into fleet tasks.

:class:`PodWatcher` lists pods with the field selector ``spec.nodeName=<node>``, reconciles, then
watches from the list's resourceVersion; a 410 Gone (expired version) or any broken stream leads
to a fresh list and reconcile, so no change is missed. :class:`PodSync` decides what each pod
means for the fleet: a new pod gets its desired spec written and ``vkec2.pods.create`` published;
a change that matters (``compute.amazonaws.com/*`` annotations, labels) publishes an update; a
``deletionTimestamp`` marks the record deleted with the pod's ``deletionGracePeriodSeconds`` and
publishes a delete; the object is removed when the fleet reports the pod Terminated (at once when
there is no record at all), see :mod:`producer.deletion`. Reconcile after each list
re-publishes a create for every listed pod (a no-op on a running pod, a resume on a half-done one,
an adoption by tag after a lost record — the workers do that) and a delete for every record without
a pod; a record it has to create again is flagged ``rebuilt`` (row C27), and the list is recorded as
this node's reconcile at the Redis epoch read before it (:mod:`producer.epoch`), which also asks for
a fresh list when Redis lost its data. Nothing destructive happens before the first full list;
``synced`` is set after it.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Mapping
from typing import Any

from producer.deletion import Deleter, containers_ran
from producer.epoch import EpochWatch
from producer.fleet import FleetLink
from producer.heap import release_freed
from producer.kube import Kube, KubeError, Obj
from vkec2.contract import ANNOTATION_PREFIX, INSTANCE_ID_ANNOTATION
from vkec2.domain.models import Phase, PodRecord
from vkec2.domain.phases import K8S_FINISHED

log = logging.getLogger(__name__)

#: The memory freed after this many watch events goes back to the operating system (producer.heap).
RELEASE_EVERY_EVENTS = 1000

#: Annotations the producer itself writes; a change to them is no reason to publish an update.
OWN_ANNOTATIONS = frozenset({INSTANCE_ID_ANNOTATION})


def what_matters(pod: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """The parts of a pod whose change the workers must hear about: vkec2 annotations and labels."""
    meta = pod.get("metadata") or {}
    annotations = {
        k: str(v)
        for k, v in (meta.get("annotations") or {}).items()
        if k.startswith(ANNOTATION_PREFIX) and k not in OWN_ANNOTATIONS
    }
    labels = {k: str(v) for k, v in (meta.get("labels") or {}).items()}
    return annotations, labels


def deletion_grace(pod: Mapping[str, Any]) -> float | None:
    """The pod object's ``metadata.deletionGracePeriodSeconds``, or None when it has none."""
    raw = (pod.get("metadata") or {}).get("deletionGracePeriodSeconds")
    try:
        return None if raw is None else float(raw)
    except (TypeError, ValueError):
        return None


def desired_spec(pod: Mapping[str, Any]) -> Obj:
    """The pod as stored for the workers: metadata and spec, without status or server bookkeeping."""
    meta = dict(pod.get("metadata") or {})
    for key in ("managedFields", "resourceVersion"):
        meta.pop(key, None)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": dict(pod.get("spec") or {})}


class PodSync:
    """What each pod event means for the fleet (used by the watch; pure of Kubernetes writes but deletion)."""

    def __init__(
        self, link: FleetLink, deleter: Deleter | None, notice: Callable[[Obj], None] | None = None
    ) -> None:
        self.link = link
        self.store = link.store
        self.deleter = deleter
        self.notice = notice  # told about each new pod (producer.notices.EvictionNotice)

    def reconcile(self, pods: list[Obj]) -> None:
        """After a full list: every listed pod is (re)submitted, every record without a pod deleted."""
        listed = {str(p["metadata"]["uid"]) for p in pods}
        for pod in pods:
            self.on_pod(pod, resync=True)
        for record in self.store.records(self.link.node):
            if record.uid not in listed:
                self.on_gone(record)

    def on_pod(self, pod: Obj, resync: bool = False) -> None:
        """An ADDED or MODIFIED pod (or one seen by a list)."""
        meta = pod["metadata"]
        uid = str(meta["uid"])
        record = self.store.get(uid)
        if meta.get("deletionTimestamp"):
            self._deleting(pod, record)
            return
        phase = (pod.get("status") or {}).get("phase")
        if record is None:
            if phase in K8S_FINISHED:
                return  # a finished pod is never started again
            log.info(
                "pod %s/%s (%s) bound to %s: creating",
                meta.get("namespace"),
                meta["name"],
                uid,
                self.link.node,
            )
            self.link.create(desired_spec(pod), rebuilt=resync)
            if self.notice is not None:
                self.notice(pod)
        elif record.deleted:
            return
        elif what_matters(record.spec) != what_matters(pod):
            log.info("pod %s/%s changed: updating", meta.get("namespace"), meta["name"])
            self.link.update(desired_spec(pod))
        elif resync and not record.phase.final:
            self.link.create(desired_spec(pod))

    def on_deleted(self, pod: Obj) -> None:
        """A DELETED pod: the object is gone, so the instance must go too."""
        uid = str(pod["metadata"]["uid"])
        self.link.forget_content(uid)
        if self.deleter is not None:
            self.deleter.untrack(uid)
        record = self.store.get(uid)
        if record is not None and not record.deleting:
            self.on_gone(record)  # (a record already being deleted has its delete task)

    def on_gone(self, record: PodRecord) -> None:
        """A record whose pod no longer exists."""
        if record.done:
            self.store.forget(record.uid)
            return
        log.info("pod %s/%s (%s) is gone: deleting", record.namespace, record.name, record.uid)
        self.link.delete(record.uid)

    def _deleting(self, pod: Obj, record: PodRecord | None) -> None:
        self.link.forget_content(str(pod["metadata"]["uid"]))
        grace = deletion_grace(pod)
        if record is not None and not record.deleted:
            log.info("pod %s/%s is being deleted", record.namespace, record.name)
            self.link.delete(record.uid, grace)
        if record is None and containers_ran(pod, None):
            # Redis lost the record of a pod that ran: record it, deleted, so a worker finds the
            # instance by its tags and terminates it.
            self.store.put_desired(desired_spec(pod), self.link.node)
            self.link.delete(str(pod["metadata"]["uid"]), grace)
            record = self.store.get(str(pod["metadata"]["uid"]))
        if self.deleter is None:
            return
        if record is None or record.phase is Phase.TERMINATED:
            self.deleter.finish(pod, record)  # no instance was ever asked for, or it is gone
        else:
            self.deleter.track(pod)  # removed once the fleet reports Terminated (or the node is down)


class PodWatcher:
    """List + watch loop feeding :class:`PodSync`."""

    def __init__(
        self,
        kube: Kube,
        sync: PodSync,
        node: str,
        watch_timeout: int = 300,
        epoch: EpochWatch | None = None,
    ) -> None:
        self.kube = kube
        self.sync = sync
        self.node = node
        self.epoch = epoch
        self.watch_timeout = watch_timeout
        self.synced = threading.Event()
        self.lists = 0
        self.events = 0  # watch events dispatched
        self.resource_version = ""

    def list_and_reconcile(self) -> None:
        epoch = self.epoch.before_list() if self.epoch is not None else ""
        pods, rv = self.kube.list_pods(self.node)
        self.sync.reconcile(pods)
        if self.epoch is not None:
            self.epoch.listed(epoch)
        self.resource_version = rv
        self.lists += 1
        listed = len(pods)
        del pods
        release_freed()  # the list's memory, not kept at its high-water mark (producer.heap)
        if not self.synced.is_set():
            log.info("first full list of node %s: %d pods", self.node, listed)
            self.synced.set()

    def run(self, stop: threading.Event) -> None:
        backoff = 0.5
        need_list = True
        while not stop.is_set():
            try:
                if need_list or (self.epoch is not None and self.epoch.relist.is_set()):
                    self.list_and_reconcile()
                    need_list = False
                for kind, obj in self.kube.watch_pods(self.node, self.resource_version, self._timeout()):
                    if stop.is_set():
                        return
                    self._dispatch(kind, obj)
                backoff = 0.5
            except KubeError as exc:
                if stop.is_set():
                    return
                if exc.gone:
                    log.info("pod watch of %s expired (410): relisting", self.node)
                    need_list = True
                    continue
                log.warning("pod watch of %s failed: %s; relisting in %.1fs", self.node, exc, backoff)
                need_list = True
                stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
            except Exception:
                log.exception("pod watch of %s: unexpected error; relisting in %.1fs", self.node, backoff)
                need_list = True
                stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def _timeout(self) -> int:
        return max(1, int(self.watch_timeout * random.uniform(0.8, 1.0)))

    def _dispatch(self, kind: str, obj: Obj) -> None:
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if kind == "BOOKMARK":
            if rv:
                self.resource_version = str(rv)
            return
        if kind in ("ADDED", "MODIFIED"):
            self.sync.on_pod(obj)
        elif kind == "DELETED":
            self.sync.on_deleted(obj)
        if rv:
            self.resource_version = str(rv)
        self.events += 1
        if self.events % RELEASE_EVERY_EVENTS == 0:  # a burst's memory, not kept at its high-water mark
            release_freed()
