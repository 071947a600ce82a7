"""ConfigMap, Secret, downward API and token content for the pods of this node: resolved, sealed, refreshed.

:class:`PodContent` sits in :class:`~producer.fleet.FleetLink`: before a pod's desired spec is
written, :meth:`PodContent.prepare` resolves what it references (:mod:`producer.refs`) and seals it
into the spec (:mod:`vkec2.domain.sealed`), so Redis never holds a value in plaintext. A reference
that is missing leaves the pod out of the fleet (it stays Pending, reported with reason
``CreateContainerConfigError`` through ``report``) and :meth:`PodContent.sweep`, run every
``secrets.refresh_seconds`` (pending pods every second), tries it again: never dropped. The same
sweep re-resolves the pods it tracks and publishes an update when their volume content changed
(compared by the sealed digest), so mounted files follow their ConfigMaps and Secrets as the
kubelet's do. Objects are read one GET per referenced name (:class:`KubeLookup`: like the node
authorizer, nothing is listed or watched); service account tokens come from the TokenRequest API,
bound to the pod, and are reused until 80% of their lifetime has passed, as the kubelet does.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from producer.refs import Lookup, Obj, RefError, needs_resolving, resolve
from vkec2.contract import RESOLVED_FIELD
from vkec2.domain.sealed import Sealer, SealingError

if TYPE_CHECKING:
    from producer.kube import Kube
    from vkec2.domain.models import PodRecord

log = logging.getLogger(__name__)

#: ``report(pod, reason, message)``: tell the user why a pod waits (pod status and Event, or a log line).
Report = Callable[[Mapping[str, Any], str, str], None]
PENDING_RETRY_SECONDS = 1.0


class Records(Protocol):
    def get(self, uid: str) -> PodRecord | None: ...


class FleetLink(Protocol):
    """What the sweep needs of :class:`producer.fleet.FleetLink` (which holds this object)."""

    @property
    def store(self) -> Records: ...

    def create(self, pod: Mapping[str, Any], *, rebuilt: bool = False) -> int | None: ...

    def update(self, pod: Mapping[str, Any], *, prepared: bool = False) -> int | None: ...


TOKEN_RENEW_SHARE = 0.8


class KubeLookup:
    """One GET per referenced ConfigMap/Secret; pod-bound TokenRequests, reused until 80% of their life."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self._tokens: dict[tuple[str, str, int], tuple[str, float]] = {}
        self._lock = threading.Lock()

    def configmap(self, namespace: str, name: str) -> Obj | None:
        return self.kube.get_configmap(namespace, name)

    def secret(self, namespace: str, name: str) -> Obj | None:
        return self.kube.get_secret(namespace, name)

    def token(self, pod: Mapping[str, Any], audience: str, seconds: int) -> str:
        meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        uid = str(meta.get("uid") or "")
        key = (uid, audience, seconds)
        with self._lock:
            cached = self._tokens.get(key)
        if cached is not None and time.monotonic() < cached[1]:
            return cached[0]
        sa = str(spec.get("serviceAccountName") or spec.get("serviceAccount") or "default")
        token = self.kube.create_token(
            str(meta.get("namespace") or "default"), sa, audience, seconds, str(meta.get("name")), uid
        )
        if not token:
            raise RefError(f'the TokenRequest for service account "{sa}" returned no token')
        with self._lock:
            self._tokens[key] = (token, time.monotonic() + seconds * TOKEN_RENEW_SHARE)
        return token

    def forget(self, uid: str) -> None:
        with self._lock:
            for key in [k for k in self._tokens if k[0] == uid]:
                del self._tokens[key]


class PodContent:
    """Resolve + seal on the way into the fleet; retry the waiting pods; refresh the running ones."""

    def __init__(self, lookup: Lookup, sealer: Sealer | None, report: Report) -> None:
        self.lookup = lookup
        self.sealer = sealer
        self.report = report
        self._pending: dict[str, Obj] = {}  # uid -> desired spec waiting for its references
        self._tracked: dict[str, Obj] = {}  # uid -> desired spec whose content is refreshed
        self._reported: dict[str, str] = {}  # uid -> last message reported
        self._lock = threading.Lock()

    def prepare(self, pod: Mapping[str, Any]) -> Obj | None:
        """The spec to store (with the sealed content), or None when the pod has to wait."""
        spec = {k: v for k, v in pod.items() if k != RESOLVED_FIELD}
        uid = str(spec["metadata"]["uid"])
        if not needs_resolving(spec):
            self.forget(uid)
            return spec
        try:
            spec[RESOLVED_FIELD] = self._sealed(spec)
        except (RefError, SealingError) as exc:
            self._wait(uid, spec, exc.reason, exc.message)
            return None
        except Exception as exc:  # the API server failing (403, 5xx, unreachable): report, try again
            log.warning("resolving pod %s: %s; trying again", uid, exc)
            self._wait(uid, spec, RefError.reason, f"cannot read what the pod references: {exc}")
            return None
        with self._lock:
            self._pending.pop(uid, None)
            self._reported.pop(uid, None)
            self._tracked[uid] = spec
        return spec

    def _sealed(self, spec: Obj) -> dict[str, str]:
        if self.sealer is None:
            raise SealingError(
                "the pod references ConfigMaps/Secrets, and the producer holds no secrets key "
                "(secrets.keys / secrets.key_file) to seal them with"
            )
        return self.sealer.seal(resolve(spec, self.lookup))

    def _wait(self, uid: str, spec: Obj, reason: str, message: str) -> None:
        with self._lock:
            self._pending[uid] = spec
            self._tracked.pop(uid, None)
            again = self._reported.get(uid) == message
            self._reported[uid] = message
        meta = spec["metadata"]
        log.info("pod %s/%s waits: %s: %s", meta.get("namespace"), meta.get("name"), reason, message)
        if not again:
            try:
                self.report(spec, reason, message)
            except Exception as exc:
                log.warning("reporting %s for pod %s failed: %s", reason, uid, exc)

    def forget(self, uid: str) -> None:
        with self._lock:
            self._pending.pop(uid, None)
            self._tracked.pop(uid, None)
            self._reported.pop(uid, None)
        forget = getattr(self.lookup, "forget", None)
        if forget is not None:
            forget(uid)

    def waiting(self) -> set[str]:
        with self._lock:
            return set(self._pending)

    def sweep(self, link: FleetLink, refresh: bool) -> None:
        """Create the pods whose references resolve now; with ``refresh``, update changed content."""
        with self._lock:
            pending, tracked = list(self._pending.values()), list(self._tracked.values())
        for spec in pending:
            uid = str(spec["metadata"]["uid"])
            record = link.store.get(uid)
            if record is not None and (record.deleted or record.phase.final):
                self.forget(uid)
            elif record is None:
                link.create(spec)
            else:
                link.update(spec)
        if not refresh:
            return
        for spec in tracked:
            uid = str(spec["metadata"]["uid"])
            record = link.store.get(uid)
            if record is None or record.deleted or record.phase.final:
                if record is not None:
                    self.forget(uid)
                continue
            try:  # a running pod keeps its files when a reference fails now (as the kubelet does)
                sealed = self._sealed(spec)
            except Exception as exc:
                log.warning("refreshing the content of pod %s: %s; keeping its files", uid, exc)
                continue
            stored = record.spec.get(RESOLVED_FIELD) or {}
            if sealed["digest"] != stored.get("digest"):
                log.info("pod %s: referenced content changed; updating its volumes", uid)
                link.update({**spec, RESOLVED_FIELD: sealed}, prepared=True)

    def run(self, stop: threading.Event, link: FleetLink, refresh_seconds: float) -> None:
        last = time.monotonic()
        while not stop.wait(min(PENDING_RETRY_SECONDS, refresh_seconds)):
            refresh = time.monotonic() - last >= refresh_seconds
            if refresh:
                last = time.monotonic()
            try:
                self.sweep(link, refresh)
            except Exception:
                log.exception("ConfigMap/Secret sweep failed")


def pending_status(pod: Mapping[str, Any], reason: str, message: str) -> Obj:
    """The pod status of a pod whose containers cannot be configured: Pending, every container waiting."""
    spec = pod.get("spec") or {}
    status = dict(pod.get("status") or {})
    status["phase"] = "Pending"
    waiting = {"waiting": {"reason": reason, "message": message}}
    for field, containers in (
        ("initContainerStatuses", spec.get("initContainers") or []),
        ("containerStatuses", spec.get("containers") or []),
    ):
        if containers:
            status[field] = [
                {
                    "name": c.get("name"),
                    "image": c.get("image", ""),
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "started": False,
                    "state": waiting,
                }
                for c in containers
            ]
    return status


def kube_report(kube: Kube, node: str) -> Report:
    """Report a waiting pod as the kubelet does: Pending with every container waiting, and a Warning Event."""
    from producer.kube import KubeError
    from producer.status import event_object

    def report(pod: Mapping[str, Any], reason: str, message: str) -> None:
        meta = pod["metadata"]
        current = kube.get_pod(str(meta.get("namespace") or "default"), str(meta["name"]))
        if current is None or current["metadata"].get("uid") != meta.get("uid"):
            return
        entry = f"{str(meta['uid'])[:8]}-{time.time_ns() // 1_000_000}"
        kube.create_event(event_object(current, entry, node, reason, message, True, time.time()))
        current["status"] = pending_status(current, reason, message)
        try:
            kube.replace_pod_status(current)
        except KubeError as exc:
            if not exc.conflict:
                raise  # a conflict: the next report or the fleet's status writes it

    return report
