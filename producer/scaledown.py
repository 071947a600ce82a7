"""Scale-down or restart? What a producer decides on SIGTERM before it drains its own node.

A producer runs as pod ``NAME-N`` of the StatefulSet ``NAME`` (the chart passes ``POD_NAME`` and
``POD_NAMESPACE`` from the downward API). Kubernetes lowers ``spec.replicas`` before it stops the
pods above the new count, so on SIGTERM an ordinal ``N >= spec.replicas`` means this node is going
away for good (its pods are to be drained, :class:`producer.drain.NodeDrain`), while ``N <
replicas`` means a restart (rolling update, eviction, node maintenance) after which the same node
comes back and keeps its pods. :func:`decide` is that rule, pure; :func:`check` gathers its inputs
from the environment and the API. Anything that leaves the answer in doubt — no pod name or
namespace, a name without an ordinal, the StatefulSet gone or unreadable, no ``spec.replicas`` —
is a restart: a node is never drained by mistake (``vkec2 node drain`` remains for those cases).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass

from producer.kube import Kube, KubeError, Obj

log = logging.getLogger(__name__)

_ORDINAL = re.compile(r"(?P<name>.+)-(?P<ordinal>0|[1-9][0-9]*)")


@dataclass(frozen=True)
class Verdict:
    """Whether to drain, and why (logged either way)."""

    drain: bool
    reason: str


def statefulset_pod(pod_name: str) -> tuple[str, int] | None:
    """``("NAME", N)`` for a StatefulSet pod name ``NAME-N``; None for any other name."""
    match = _ORDINAL.fullmatch(pod_name)
    return (match["name"], int(match["ordinal"])) if match else None


def decide(pod_name: str, statefulset: Obj | None) -> Verdict:
    """Drain only when ``pod_name``'s ordinal is at or above the StatefulSet's ``spec.replicas``."""
    parsed = statefulset_pod(pod_name)
    if parsed is None:
        return Verdict(False, f"pod name {pod_name!r} is not <statefulset>-<ordinal>")
    name, ordinal = parsed
    if statefulset is None:
        return Verdict(False, f"StatefulSet {name} not found")
    if (statefulset.get("metadata") or {}).get("deletionTimestamp"):
        return Verdict(False, f"StatefulSet {name} is being deleted (uninstall, not a scale-down)")
    replicas = (statefulset.get("spec") or {}).get("replicas")
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        return Verdict(False, f"StatefulSet {name} has no valid spec.replicas ({replicas!r})")
    if ordinal >= replicas:
        return Verdict(True, f"StatefulSet {name} scaled down to {replicas}; this is ordinal {ordinal}")
    return Verdict(False, f"StatefulSet {name} keeps {replicas} replicas; ordinal {ordinal} restarts")


def check(kube: Kube, env: Mapping[str, str]) -> Verdict:
    """:func:`decide` for this pod (``POD_NAME``, ``POD_NAMESPACE``); never raises."""
    pod_name, namespace = env.get("POD_NAME", ""), env.get("POD_NAMESPACE", "")
    if not pod_name or not namespace:
        return Verdict(False, "POD_NAME or POD_NAMESPACE not set: not run by a StatefulSet")
    parsed = statefulset_pod(pod_name)
    if parsed is None:
        return decide(pod_name, None)
    try:
        statefulset = kube.get_statefulset(namespace, parsed[0])
    except KubeError as exc:
        return Verdict(False, f"cannot read StatefulSet {namespace}/{parsed[0]}: {exc}")
    return decide(pod_name, statefulset)
