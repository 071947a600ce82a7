"""The virtual Node: register or adopt it, and keep its status (capacity, addresses, conditions) current.

The node carries the labels ``type=virtual-kubelet``, ``kubernetes.io/role=agent``,
``kubernetes.io/os``, ``kubernetes.io/arch`` (stated, or from the instance types the node launches,
:mod:`vkec2.domain.citizen`; also the node's reported architecture),
``node.kubernetes.io/instance-type`` when the node launches one type only,
``node.kubernetes.io/exclude-from-external-load-balancers`` and the operator's
``kubernetes.labels``; the taints ``kubernetes.taints`` (default
``virtual-kubelet.io/provider=vkec2:NoSchedule``); and the provider ID ``vkec2://<cluster>/<node>``
(outside the ``aws://`` scheme, so the cloud node controller leaves it alone). Its InternalIP is the
producer pod's own IP and its daemon endpoint the kubelet port, so no ENI is needed. Capacity
comes from the quota-derived hash the fleet keeps in Redis, falling back to the configured values;
allocatable equals capacity (the scheduler subtracts the pods bound to the node itself). Conditions
(Ready, the pressure conditions, and the fleet's own: ``vkec2.io/QuotaExceeded``,
``vkec2.io/RemediationPaused`` while the health sweep's breaker holds back replacements,
``vkec2.io/BeatMissing`` while no beat runs, none of which touches Ready) are patched with a
strategic merge keyed by type — conditions other controllers added stay — every
``status_interval`` seconds, or at once when anything in them changes. Adopting an existing node
keeps other controllers' labels and taints and replaces only what vkec2 set before (recorded in the
node annotation ``vkec2.io/managed-labels-taints``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes.utils.quantity import parse_quantity

from producer.kube import Kube, KubeError, Obj
from vkec2.config import Settings
from vkec2.contract import (
    BEAT_MISSING,
    CLUSTER_LABEL,
    LABEL_ARCH,
    LABEL_INSTANCE_TYPE,
    NODE_MANAGED_ANNOTATION,
    QUOTA_EXCEEDED,
    REMEDIATION_PAUSED,
)
from vkec2.domain.beat import BeatLiveness
from vkec2.domain.breaker import BreakerState
from vkec2.domain.citizen import node_arch, node_instance_type
from vkec2.domain.models import PodRecord
from vkec2.domain.times import rfc3339

log = logging.getLogger(__name__)

TAINT_KEY = "virtual-kubelet.io/provider"
TAINT_VALUE = "vkec2"
PRESSURES = (
    ("MemoryPressure", "KubeletHasSufficientMemory", "the fleet has sufficient memory available"),
    ("DiskPressure", "KubeletHasNoDiskPressure", "the fleet has no disk pressure"),
    ("PIDPressure", "KubeletHasSufficientPID", "the fleet has sufficient PID available"),
    ("NetworkUnavailable", "RouteCreated", "instances use the VPC network"),
)
VERSION = "v1.33.0-vkec2"

#: What the fleet keeps in Redis for the node's own conditions: the remediation breaker, beat liveness.
FleetSignals = tuple[BreakerState, BeatLiveness]


#: A taint as (key, value, effect).
Taint = tuple[str, str, str]
DEFAULT_TAINTS: tuple[Taint, ...] = ((TAINT_KEY, TAINT_VALUE, "NoSchedule"),)


@dataclass(frozen=True)
class NodeConfig:
    """Everything that identifies and describes the node."""

    name: str
    cluster: str
    os: str = "linux"
    kubelet_port: int = 10250
    internal_ip: str = ""
    cpu: str = "96"
    memory: str = "384Gi"
    pods: str = "100"
    arch: str = "amd64"  # kubernetes.io/arch (vkec2.domain.citizen.node_arch)
    instance_type: str = ""  # node.kubernetes.io/instance-type when the node launches one type
    extra_labels: tuple[tuple[str, str], ...] = ()  # kubernetes.labels
    taints: tuple[Taint, ...] = DEFAULT_TAINTS  # kubernetes.taints

    @property
    def provider_id(self) -> str:
        return f"vkec2://{self.cluster}/{self.name}"

    @classmethod
    def of(cls, settings: Settings, **given: Any) -> NodeConfig:
        """The node described by ``settings`` (``given``: name, cluster, kubelet port, IP …)."""
        citizen = settings.kubernetes
        values: dict[str, Any] = {
            "cluster": settings.cluster_name,
            "os": settings.node.os,
            "kubelet_port": settings.node.kubelet_port,
            "cpu": settings.node.cpu,
            "memory": settings.node.memory,
            "pods": settings.node.pods,
            "arch": node_arch(settings),
            "instance_type": node_instance_type(settings),
            "extra_labels": tuple(sorted(citizen.labels.items())),
            "taints": tuple((t.key, t.value, t.effect) for t in citizen.taints),
        }
        values.update(given)
        if "name" not in values:
            values["name"] = settings.node.name or "vkec2"
        return cls(**values)


@dataclass(frozen=True)
class Health:
    """The producer's own health: Ready when ``ok``; ``reason``/``message`` name what is missing."""

    ok: bool
    reason: str
    message: str


def labels(cfg: NodeConfig) -> dict[str, str]:
    """The labels vkec2 sets on the node: its own, arch and instance type, then the operator's."""
    out = {
        "type": "virtual-kubelet",
        "kubernetes.io/role": "agent",
        "kubernetes.io/os": cfg.os,
        LABEL_ARCH: cfg.arch,
        "kubernetes.io/hostname": cfg.name,
        "node.kubernetes.io/exclude-from-external-load-balancers": "true",
        CLUSTER_LABEL: cfg.cluster,
    }
    if cfg.instance_type:
        out[LABEL_INSTANCE_TYPE] = cfg.instance_type
    return {**dict(cfg.extra_labels), **out}


def taints(cfg: NodeConfig) -> list[dict[str, str]]:
    """The node's taints as Kubernetes writes them (an empty value left out)."""
    return [
        {"key": key, "effect": effect, **({"value": value} if value else {})}
        for key, value, effect in cfg.taints
    ]


def _managed(cfg: NodeConfig) -> str:
    """The node annotation that records what vkec2 set, for the next adoption."""
    record = {"labels": sorted(labels(cfg)), "taints": sorted([k, e] for k, _, e in cfg.taints)}
    return json.dumps(record, separators=(",", ":"))


def node_object(cfg: NodeConfig) -> Obj:
    """A new Node as the producer registers it (status is patched separately)."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": cfg.name,
            "labels": labels(cfg),
            "annotations": {NODE_MANAGED_ANNOTATION: _managed(cfg)},
        },
        "spec": {"providerID": cfg.provider_id, "taints": taints(cfg)},
    }


def _previously_managed(meta: Mapping[str, Any]) -> tuple[set[str], set[tuple[str, str]]]:
    """The labels and (key, effect) taints an earlier producer set, from the node annotation; a
    node without it (or with a damaged one) had the default provider taint only."""
    raw = (meta.get("annotations") or {}).get(NODE_MANAGED_ANNOTATION)
    try:
        record = json.loads(raw) if isinstance(raw, str) else {}
        found_labels = {str(k) for k in record.get("labels", [])}
        found_taints = {(str(k), str(e)) for k, e in record.get("taints", [])}
    except (ValueError, TypeError, AttributeError):
        log.warning("node annotation %s is not vkec2's JSON: ignoring it", NODE_MANAGED_ANNOTATION)
        found_labels, found_taints = set(), set()
    return found_labels, found_taints | {(TAINT_KEY, "NoSchedule")}


def adopt(existing: Obj, cfg: NodeConfig) -> Obj:
    """``existing`` with our labels, taints and provider ID set, everything else kept: labels and
    taints an earlier producer set (the node annotation says which) and no longer configured go."""
    node = {
        **existing,
        "metadata": dict(existing.get("metadata") or {}),
        "spec": dict(existing.get("spec") or {}),
    }
    meta = node["metadata"]
    old_labels, old_taints = _previously_managed(meta)
    ours = labels(cfg)
    kept = {k: v for k, v in (meta.get("labels") or {}).items() if k not in old_labels or k in ours}
    meta["labels"] = {**kept, **ours}
    meta["annotations"] = {**(meta.get("annotations") or {}), NODE_MANAGED_ANNOTATION: _managed(cfg)}
    wanted = taints(cfg)
    replaced = old_taints | {(t["key"], t["effect"]) for t in wanted}
    others = [t for t in node["spec"].get("taints") or [] if (t.get("key"), t.get("effect")) not in replaced]
    node["spec"]["taints"] = [*others, *wanted]
    current = node["spec"].get("providerID")
    if not current:
        node["spec"]["providerID"] = cfg.provider_id
    elif current != cfg.provider_id:
        log.warning("node %s has providerID %s (not %s); leaving it", cfg.name, current, cfg.provider_id)
    return node


def capacity(stored: Mapping[str, str], cfg: NodeConfig) -> dict[str, str]:
    """Node capacity: the quota-derived values in Redis, else the configured ones."""
    out = {"cpu": cfg.cpu, "memory": cfg.memory, "pods": cfg.pods}
    for key in out:
        value = stored.get(key)
        if value:
            try:
                parse_quantity(value)
            except ValueError:
                log.warning("ignoring bad %s capacity %r from Redis", key, value)
                continue
            out[key] = str(value)
    return out


def allocatable(cap: Mapping[str, str]) -> dict[str, str]:
    """Allocatable is capacity: the scheduler subtracts the pods bound to the node (and their
    requests) itself, so subtracting them here too would count every pod twice."""
    return {"cpu": cap["cpu"], "memory": cap["memory"], "pods": cap["pods"]}


def quota_condition(quota: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """``vkec2.io/QuotaExceeded``: True while launches of some instance type are refused by a quota."""
    if not quota:
        return {"type": QUOTA_EXCEEDED, "status": "False", "reason": "QuotaAvailable", "message": ""}
    kinds = sorted(quota)
    first = quota[kinds[0]]
    return {
        "type": QUOTA_EXCEEDED,
        "status": "True",
        "reason": str(first.get("code") or "QuotaExceeded"),
        "message": f"launches of {', '.join(kinds)} refused by an account quota: {first.get('message', '')}",
    }


def breaker_condition(state: BreakerState) -> dict[str, str]:
    """``vkec2.io/RemediationPaused``: True while the health sweep's breaker holds back replacements."""
    if not state.open:
        return {"type": REMEDIATION_PAUSED, "status": "False", "reason": state.reason, "message": ""}
    return {"type": REMEDIATION_PAUSED, "status": "True", "reason": state.reason, "message": state.message}


def beat_condition(beat: BeatLiveness) -> dict[str, str]:
    """``vkec2.io/BeatMissing``: True while no beat is active for too long (Ready is not affected)."""
    status = "True" if beat.missing else "False"
    return {"type": BEAT_MISSING, "status": status, "reason": beat.reason, "message": beat.message}


def conditions(
    health: Health,
    quota: Mapping[str, Mapping[str, Any]] | None = None,
    signals: FleetSignals | None = None,
) -> list[dict[str, str]]:
    """The pressure conditions (a fleet has none), the fleet's own (remediation breaker, beat
    liveness, when read), the quota condition, and Ready (last)."""
    out = [
        {"type": kind, "status": "False", "reason": reason, "message": message}
        for kind, reason, message in PRESSURES
    ]
    if signals is not None:
        out += [breaker_condition(signals[0]), beat_condition(signals[1])]
    out.append(quota_condition(quota or {}))
    out.append(
        {
            "type": "Ready",
            "status": "True" if health.ok else "False",
            "reason": health.reason,
            "message": health.message,
        }
    )
    return out


def status_body(
    cfg: NodeConfig,
    health: Health,
    cap: Mapping[str, str],
    alloc: Mapping[str, str],
    quota: Mapping[str, Mapping[str, Any]] | None = None,
    signals: FleetSignals | None = None,
) -> Obj:
    """The node status the producer owns (no timestamps: those are added when patching)."""
    addresses = [{"type": "Hostname", "address": cfg.name}]
    if cfg.internal_ip:
        addresses.insert(0, {"type": "InternalIP", "address": cfg.internal_ip})
    return {
        "capacity": dict(cap),
        "allocatable": dict(alloc),
        "conditions": conditions(health, quota, signals),
        "addresses": addresses,
        "daemonEndpoints": {"kubeletEndpoint": {"Port": cfg.kubelet_port}},
        "nodeInfo": {
            "machineID": "",
            "systemUUID": "",
            "bootID": "",
            "kernelVersion": "",
            "osImage": "vkec2 (Amazon EC2)",
            "containerRuntimeVersion": "vkec2://0.1.0",
            "kubeletVersion": VERSION,
            "kubeProxyVersion": "",
            "operatingSystem": cfg.os,
            "architecture": cfg.arch,
        },
    }


class NodeKeeper:
    """Registers the node and keeps its status current."""

    def __init__(self, kube: Kube, cfg: NodeConfig, status_interval: float = 60.0) -> None:
        self.kube = kube
        self.cfg = cfg
        self.status_interval = status_interval
        self.uid = ""
        self._last_body: Obj | None = None
        self._last_patch = 0.0
        self._transitions: dict[str, tuple[str, str]] = {}  # type -> (status, lastTransitionTime)
        self.patches = 0

    def register(self) -> Obj:
        """Create the node, or adopt an existing one of that name; returns the stored Node."""
        for _ in range(5):
            existing = self.kube.get_node(self.cfg.name)
            try:
                if existing is None:
                    node = self.kube.create_node(node_object(self.cfg))
                    log.info("registered node %s", self.cfg.name)
                else:
                    wanted = adopt(existing, self.cfg)
                    node = self.kube.replace_node(wanted) if wanted != existing else existing
                    log.info("adopted node %s", self.cfg.name)
                    for cond in (existing.get("status") or {}).get("conditions") or []:
                        self._transitions[str(cond.get("type"))] = (
                            str(cond.get("status")),
                            str(cond.get("lastTransitionTime", "")),
                        )
            except KubeError as exc:
                if exc.conflict:
                    continue
                raise
            self.uid = str(node["metadata"]["uid"])
            return node
        raise KubeError(409, "Conflict", f"node {self.cfg.name} kept changing while adopting it")

    def sync_status(
        self,
        health: Health,
        stored_capacity: Mapping[str, str],
        records: Iterable[PodRecord],
        force: bool = False,
        quota: Mapping[str, Mapping[str, Any]] | None = None,
        signals: FleetSignals | None = None,
    ) -> bool:
        """Patch the node status if it changed or ``status_interval`` passed; True when patched."""
        cap = capacity(stored_capacity, self.cfg)
        del records  # allocatable is capacity; the scheduler counts the pods (kept for callers)
        body = status_body(self.cfg, health, cap, allocatable(cap), quota, signals)
        now = time.time()
        if not force and body == self._last_body and now - self._last_patch < self.status_interval:
            return False
        stamp = rfc3339(now)
        for cond in body["conditions"]:
            previous = self._transitions.get(cond["type"])
            if previous is None or previous[0] != cond["status"] or not previous[1]:
                previous = (cond["status"], stamp)
                self._transitions[cond["type"]] = previous
            cond["lastTransitionTime"] = previous[1]
            cond["lastHeartbeatTime"] = stamp
        self.kube.patch_node_status(self.cfg.name, {"status": body})
        if (
            self._last_body is None
            or body["conditions"][-1]["status"] != (self._last_body["conditions"][-1]["status"])
        ):
            log.info(
                "node %s Ready=%s (%s: %s)",
                self.cfg.name,
                body["conditions"][-1]["status"],
                health.reason,
                health.message,
            )
        for cond in body["conditions"]:
            cond.pop("lastHeartbeatTime")
            cond.pop("lastTransitionTime")
        self._last_body = body
        self._last_patch = now
        self.patches += 1
        return True
