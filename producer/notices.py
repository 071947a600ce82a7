"""Warnings the producer gives about a pod as it arrives: eviction after the node goes NotReady.

When the node stops renewing its lease (Redis down, no worker, the outbox stalled), Kubernetes'
node lifecycle controller taints it ``node.kubernetes.io/not-ready`` or ``unreachable`` with
effect NoExecute, and every pod whose toleration of that taint has a finite ``tolerationSeconds``
(the DefaultTolerationSeconds admission plugin adds 300 s to pods that state none) is evicted
when that time is up — and vkec2 then terminates its instance. :class:`EvictionNotice` tells the
pod's owner once, when the pod is first seen: a log line and a Warning event
(``EvictedIfNodeNotReady``) naming the seconds and the tolerations that keep the pod
(``kubernetes.eviction_warning``, on by default). The event is named after the pod's UID, so a
relist never repeats it.
"""

from __future__ import annotations

import logging
import time

from producer.kube import Kube, KubeError, Obj
from producer.status import event_object
from vkec2.contract import EVICTED_IF_NOT_READY, TAINT_NOT_READY, TAINT_UNREACHABLE
from vkec2.domain.citizen import eviction_after

log = logging.getLogger(__name__)


def eviction_message(seconds: int) -> str:
    """The warning's text for a pod evicted ``seconds`` after the node goes NotReady."""
    return (
        f"this pod is evicted (and its EC2 instance terminated) {seconds}s after the virtual node goes "
        f"NotReady or unreachable; to keep it, tolerate {TAINT_NOT_READY} and {TAINT_UNREACHABLE} "
        "(NoExecute) without tolerationSeconds"
    )


class EvictionNotice:
    """Warns once per pod about a finite toleration of the NotReady/unreachable taints."""

    def __init__(self, kube: Kube | None, node: str) -> None:
        self.kube = kube
        self.node = node

    def __call__(self, pod: Obj) -> None:
        seconds = eviction_after(pod)
        if seconds is None:
            return
        meta = pod.get("metadata") or {}
        message = eviction_message(seconds)
        log.warning("pod %s/%s: %s", meta.get("namespace"), meta.get("name"), message)
        if self.kube is None:
            return
        uid = str(meta.get("uid", ""))
        event = event_object(
            pod, f"eviction-{uid}", self.node, EVICTED_IF_NOT_READY, message, True, time.time()
        )
        try:
            self.kube.create_event(event)
        except KubeError as exc:
            if not exc.conflict:  # (a conflict: told before)
                log.warning(
                    "cannot write the eviction warning of %s/%s: %s",
                    meta.get("namespace"),
                    meta.get("name"),
                    exc,
                )
