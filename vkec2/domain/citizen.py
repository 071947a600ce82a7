"""The node as a Kubernetes citizen: its architecture and instance type, DaemonSet pods, NotReady eviction.

Pure rules on the settings and a pod. :func:`node_arch` is the ``kubernetes.io/arch`` the node
carries: ``kubernetes.arch`` when stated, else the architecture of the instance types the node
launches (``ec2``'s type, alternatives and choices, every warm pool's, every host pool's), taken
from the type name (:func:`vkec2.config.citizen.arch_of`: Graviton and Apple-silicon Macs are
arm64); a fleet launching both gets the architecture of ``ec2.instance_type``, as a node label has
one value (run one node per architecture, or state ``kubernetes.arch``).
:func:`node_instance_type` is the ``node.kubernetes.io/instance-type`` when the node launches
exactly one type (no allowlist lets a pod ask for another). :func:`refuse_daemonset_pod` raises
:class:`~vkec2.errors.InvalidPodSpec` (``DaemonSetPodRefused``) for a pod a DaemonSet owns unless
``kubernetes.daemonset_pods`` is ``run``, so it fails the way an invalid spec does (row C1):
Failed, a Warning event, nothing launched. :func:`eviction_after` is the shortest finite
``tolerationSeconds`` of the pod's tolerations of the NotReady/unreachable ``NoExecute`` taints —
after that long NotReady, Kubernetes evicts the pod and vkec2 terminates its instance.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vkec2.config import Settings
from vkec2.config.allowlist import ANY
from vkec2.config.citizen import arch_of
from vkec2.contract import DAEMONSET_POD_REFUSED, TAINT_NOT_READY, TAINT_UNREACHABLE
from vkec2.errors import InvalidPodSpec


def _allowlisted_types(settings: Settings) -> list[str]:
    """The instance types an allowlist lets pods ask for by annotation ("*" among them: any)."""
    lists = [settings.allowlists.default, *settings.allowlists.namespaces.values()]
    return [kind for allowlist in lists for kind in allowlist.instance_types or ()]


def launch_types(settings: Settings) -> list[str]:
    """Every instance type the node may launch, ``ec2.instance_type`` first, without repeats: the
    configured ones (``ec2``, warm pools, host pools) and the allowlisted ones."""
    types = [settings.ec2.instance_type, *settings.ec2.instance_types, *settings.ec2.instance_type_choices]
    for pool in settings.warm_pools:
        types += [pool.instance_type, *pool.instance_types]
    types += [h.instance_type for h in settings.host_pools if h.instance_type]
    types += [kind for kind in _allowlisted_types(settings) if kind != ANY]
    return list(dict.fromkeys(types))


def node_arch(settings: Settings) -> str:
    """The node's ``kubernetes.io/arch`` (amd64 or arm64)."""
    if settings.kubernetes.arch is not None:
        return settings.kubernetes.arch
    return arch_of(settings.ec2.instance_type)


def mixed_arches(settings: Settings) -> list[str]:
    """The launch types whose architecture differs from the node's (a warning at start)."""
    arch = node_arch(settings)
    return [t for t in launch_types(settings) if arch_of(t) != arch]


def node_instance_type(settings: Settings) -> str:
    """The node's ``node.kubernetes.io/instance-type`` when it launches one type only, else ""."""
    types = launch_types(settings)
    return types[0] if len(types) == 1 and ANY not in _allowlisted_types(settings) else ""


def daemonset_owner(pod: Mapping[str, Any]) -> str:
    """The name of the DaemonSet that owns ``pod``, or "" when none does."""
    meta = pod.get("metadata") if isinstance(pod, Mapping) else None
    owners = meta.get("ownerReferences") if isinstance(meta, Mapping) else None
    for owner in owners if isinstance(owners, list) else ():
        if isinstance(owner, Mapping) and owner.get("kind") == "DaemonSet":
            return str(owner.get("name") or "?")
    return ""


def refuse_daemonset_pod(settings: Settings, pod: Mapping[str, Any]) -> None:
    """Raise InvalidPodSpec (DaemonSetPodRefused) for a DaemonSet's pod, unless they are run."""
    owner = daemonset_owner(pod)
    if owner and settings.kubernetes.daemonset_pods == "refuse":
        raise InvalidPodSpec(
            f"pod of DaemonSet {owner!r} refused: a virtual node gives each pod its own EC2 instance; "
            "add a nodeAffinity that excludes type=virtual-kubelet to the DaemonSet, or set "
            "kubernetes.daemonset_pods: run",
            reason=DAEMONSET_POD_REFUSED,
        )


def eviction_after(pod: Mapping[str, Any]) -> int | None:
    """The seconds after which a NotReady/unreachable node's pod is evicted: the smallest finite
    ``tolerationSeconds`` among its tolerations of those NoExecute taints; None when it tolerates
    them forever (or not at all: then the taint manager evicts it at once, and admission adds 300 s
    tolerations to every pod that has none)."""
    spec = pod.get("spec") if isinstance(pod, Mapping) else None
    tolerations = spec.get("tolerations") if isinstance(spec, Mapping) else None
    found: list[int] = []
    for tol in tolerations if isinstance(tolerations, list) else ():
        if not isinstance(tol, Mapping) or tol.get("effect") not in (None, "", "NoExecute"):
            continue
        key = tol.get("key")
        if key not in (TAINT_NOT_READY, TAINT_UNREACHABLE) and not (
            key in (None, "") and tol.get("operator") == "Exists"
        ):
            continue
        seconds = tol.get("tolerationSeconds")
        if isinstance(seconds, int) and not isinstance(seconds, bool):
            found.append(max(seconds, 0))
    return min(found) if found else None
