"""The virtual Node: register or adopt it, and keep its status (capacity, addresses, conditions) current.

The node carries the labels ``type=virtual-kubelet``, ``kubernetes.io/role=agent``,
``kubernetes.io/os`` and ``node.kubernetes.io/exclude-from-external-load-balancers``, the taint
``virtual-kubelet.io/provider=vkec2:NoSchedule`` and the provider ID ``vkec2://<cluster>/<node>``
(outside the ``aws://`` scheme, so the cloud node controller leaves it alone). Its InternalIP is the
producer pod's own IP and its daemon endpoint the kubelet port, so no ENI is needed. Capacity
comes from the quota-derived hash the fleet keeps in Redis, falling back to the configured values;
allocatable is capacity minus what the node's live pods take. Conditions (Ready, the pressure
conditions, and the fleet's own: ``vkec2.io/QuotaExceeded``, ``vkec2.io/RemediationPaused`` while the
health sweep's breaker holds back replacements, ``vkec2.io/BeatMissing`` while no beat runs, none of
which touches Ready) are patched with a strategic merge keyed by type — conditions other controllers added
stay — every ``status_interval`` seconds, or at once when anything in them changes. Adopting an
existing node keeps its other labels and taints.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from kubernetes.utils.quantity import parse_quantity

from producer.kube import Kube, KubeError, Obj
from vkec2.contract import BEAT_MISSING, CLUSTER_LABEL, QUOTA_EXCEEDED, REMEDIATION_PAUSED
from vkec2.domain.beat import BeatLiveness
from vkec2.domain.breaker import BreakerState
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

    @property
    def provider_id(self) -> str:
        return f"vkec2://{self.cluster}/{self.name}"


@dataclass(frozen=True)
class Health:
    """The producer's own health: Ready when ``ok``; ``reason``/``message`` name what is missing."""

    ok: bool
    reason: str
    message: str


def labels(cfg: NodeConfig) -> dict[str, str]:
    return {
        "type": "virtual-kubelet",
        "kubernetes.io/role": "agent",
        "kubernetes.io/os": cfg.os,
        "kubernetes.io/hostname": cfg.name,
        "node.kubernetes.io/exclude-from-external-load-balancers": "true",
        CLUSTER_LABEL: cfg.cluster,
    }


def taint() -> dict[str, str]:
    return {"key": TAINT_KEY, "value": TAINT_VALUE, "effect": "NoSchedule"}


def node_object(cfg: NodeConfig) -> Obj:
    """A new Node as the producer registers it (status is patched separately)."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": cfg.name, "labels": labels(cfg)},
        "spec": {"providerID": cfg.provider_id, "taints": [taint()]},
    }


def adopt(existing: Obj, cfg: NodeConfig) -> Obj:
    """``existing`` with our labels, taint and provider ID added, everything else kept."""
    node = {
        **existing,
        "metadata": dict(existing.get("metadata") or {}),
        "spec": dict(existing.get("spec") or {}),
    }
    node["metadata"]["labels"] = {**(node["metadata"].get("labels") or {}), **labels(cfg)}
    ours = taint()
    taints = [
        t
        for t in node["spec"].get("taints") or []
        if not (t.get("key") == ours["key"] and t.get("effect") == ours["effect"])
    ]
    node["spec"]["taints"] = [*taints, ours]
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


def _requests(record: PodRecord) -> tuple[Decimal, Decimal]:
    cpu = memory = Decimal(0)
    for container in (record.spec.get("spec") or {}).get("containers") or []:
        req = (container.get("resources") or {}).get("requests") or {}
        try:
            cpu += parse_quantity(req.get("cpu", 0))
            memory += parse_quantity(req.get("memory", 0))
        except ValueError:
            continue
    return cpu, memory


def _cpu(value: Decimal) -> str:
    milli = int(value * 1000)
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"


def _memory(value: Decimal) -> str:
    ki = int(value) // 1024
    return f"{ki}Ki"


def allocatable(cap: Mapping[str, str], records: Iterable[PodRecord]) -> dict[str, str]:
    """Capacity minus the pods the node runs (not yet finished or deleted) and their requests."""
    cpu, memory, pods = parse_quantity(cap["cpu"]), parse_quantity(cap["memory"]), parse_quantity(cap["pods"])
    for record in records:
        if record.phase.final or record.deleted:
            continue
        c, m = _requests(record)
        cpu, memory, pods = cpu - c, memory - m, pods - 1
    zero = Decimal(0)
    return {
        "cpu": _cpu(max(cpu, zero)),
        "memory": _memory(max(memory, zero)),
        "pods": str(int(max(pods, zero))),
    }


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
            "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), "amd64"),
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
        body = status_body(self.cfg, health, cap, allocatable(cap, records), quota, signals)
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
