"""A scrape as the kubelet serves it: the Summary API (stats/v1alpha1) JSON and the Prometheus texts.

:func:`summary` builds ``/stats/summary`` with the field names of
``k8s.io/kubelet/pkg/apis/stats/v1alpha1``. A pod's containers are what its agent measured; the
pod's CPU and memory are the sum over its containers, its network is its instance's (one pod per
instance), its ``ephemeral-storage`` the capacity and free space of the filesystem holding the
pod's directory (no ``usedBytes``: the agent does not walk the pod's files). The virtual node's
figures are the sum over its pods' instances (CPU, memory, root filesystems, network per interface
name); a figure appears only when every pod reported it. Absent: ``systemContainers``, ``runtime``
(no image filesystem), ``rlimit``, ``swap``, volumes, container ``rootfs`` and ``logs``.
:func:`resource_metrics` is ``/metrics/resource`` (what metrics-server scrapes, with the sample
timestamps the kubelet adds) and :func:`node_metrics` the kubelet-style ``/metrics`` the records
alone can answer; both are rendered by :mod:`prometheus_client` from collectors made per request.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agent.stats import CpuUsage, InstanceStats, MemoryUsage
from producer.kubelet.stats import SCRAPED_PHASES, PodUsage, Scrape, StatsCollector
from vkec2.domain.models import PodRecord
from vkec2.domain.times import rfc3339

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


def _sum(values: Iterable[int | None]) -> int | None:
    """The sum, or ``None`` when any value is unknown (an honest total or none at all)."""
    total = 0
    for v in values:
        if v is None:
            return None
        total += v
    return total


def _put(out: dict[str, Any], **fields: int | None) -> dict[str, Any]:
    out.update({k: v for k, v in fields.items() if v is not None})
    return out


def cpu_json(cpu: CpuUsage, when: float) -> dict[str, Any]:
    return _put(
        {"time": rfc3339(when)}, usageNanoCores=cpu.nano_cores, usageCoreNanoSeconds=cpu.core_nanoseconds
    )


def memory_json(m: MemoryUsage, when: float) -> dict[str, Any]:
    return _put(
        {"time": rfc3339(when)},
        availableBytes=m.available,
        usageBytes=m.usage,
        workingSetBytes=m.working_set,
        rssBytes=m.rss,
        pageFaults=m.page_faults,
        majorPageFaults=m.major_page_faults,
    )


def sum_cpu(cpus: Sequence[CpuUsage]) -> CpuUsage:
    return CpuUsage(_sum(c.core_nanoseconds for c in cpus), _sum(c.nano_cores for c in cpus))


def sum_memory(ms: Sequence[MemoryUsage]) -> MemoryUsage:
    names = ("working_set", "usage", "rss", "available", "page_faults", "major_page_faults")
    return MemoryUsage(*(_sum(getattr(m, n) for m in ms) for n in names))


def pod_cpu(stats: InstanceStats) -> CpuUsage:
    """A pod's CPU: the sum over its containers (unknown when it has none measured)."""
    return sum_cpu([c.cpu for c in stats.containers]) if stats.containers else CpuUsage()


def pod_memory(stats: InstanceStats) -> MemoryUsage:
    """A pod's memory: the sum over its containers (``available`` belongs to no container)."""
    return sum_memory([c.memory for c in stats.containers]) if stats.containers else MemoryUsage()


def _network(stats: Sequence[InstanceStats], when: float) -> dict[str, Any]:
    merged: dict[str, list[int]] = {}
    for s in stats:
        for i in s.interfaces:
            t = merged.setdefault(i.name, [0, 0, 0, 0])
            for k, v in enumerate((i.rx_bytes, i.rx_errors, i.tx_bytes, i.tx_errors)):
                t[k] += v
    interfaces = [
        {"name": name, "rxBytes": t[0], "rxErrors": t[1], "txBytes": t[2], "txErrors": t[3]}
        for name, t in sorted(merged.items())
    ]
    out: dict[str, Any] = {"time": rfc3339(when)}
    default = next((i for i in interfaces if i["name"] == "eth0"), interfaces[0] if interfaces else None)
    if default is not None:
        out.update(default)
    out["interfaces"] = interfaces
    return out


def _fs(stats: Sequence[InstanceStats], when: float) -> dict[str, Any]:
    roots = [s.root_fs for s in stats]
    if any(f is None for f in roots):
        return {"time": rfc3339(when)}
    fs = [f for f in roots if f is not None]
    inodes, free = _sum(f.inodes for f in fs), _sum(f.inodes_free for f in fs)
    return _put(
        {"time": rfc3339(when)},
        availableBytes=_sum(f.available for f in fs),
        capacityBytes=_sum(f.capacity for f in fs),
        usedBytes=_sum(f.used for f in fs),
        inodesFree=free,
        inodes=inodes,
        inodesUsed=inodes - free if inodes is not None and free is not None else None,
    )


def pod_json(p: PodUsage) -> dict[str, Any]:
    s, r = p.stats, p.record
    started = r.launching_at or r.running_at or r.created_at or s.time
    containers = []
    for c in s.containers:
        entry: dict[str, Any] = {
            "name": c.name,
            "cpu": cpu_json(c.cpu, s.time),
            "memory": memory_json(c.memory, s.time),
        }
        if c.start_time is not None:
            entry["startTime"] = rfc3339(c.start_time)
        containers.append(entry)
    out: dict[str, Any] = {
        "podRef": {"name": r.name, "namespace": r.namespace or "default", "uid": r.uid},
        "startTime": rfc3339(started),
        "containers": containers,
        "cpu": cpu_json(pod_cpu(s), s.time),
        "memory": memory_json(pod_memory(s), s.time),
        "network": _network([s], s.time),
    }
    if s.pod_fs is not None:
        out["ephemeral-storage"] = _put(
            {"time": rfc3339(s.time)},
            availableBytes=s.pod_fs.available,
            capacityBytes=s.pod_fs.capacity,
            inodesFree=s.pod_fs.inodes_free,
            inodes=s.pod_fs.inodes,
        )
    return out


def summary(node: str, scrape: Scrape, started: float) -> dict[str, Any]:
    """The ``/stats/summary`` document; ``started`` is the node's start (the kubelet API's)."""
    stats = [p.stats for p in scrape.pods]
    return {
        "node": {
            "nodeName": node,
            "startTime": rfc3339(started),
            "cpu": cpu_json(sum_cpu([s.cpu for s in stats]), scrape.time),
            "memory": memory_json(sum_memory([s.memory for s in stats]), scrape.time),
            "network": _network(stats, scrape.time),
            "fs": _fs(stats, scrape.time),
        },
        "pods": [pod_json(p) for p in scrape.pods],
    }


class _Metrics(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


def render(families: list[Metric]) -> bytes:
    """The Prometheus text (format 0.0.4) of ``families``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Metrics(families))
    return generate_latest(registry)


def resource_metrics(scrape: Scrape) -> bytes:
    """``/metrics/resource``: the kubelet's resource metrics, each sample stamped with its reading's time."""
    labels = ["container", "namespace", "pod"]
    c_cpu = CounterMetricFamily(
        "container_cpu_usage_seconds_total",
        "[STABLE] Cumulative cpu time consumed by the container in core-seconds",
        labels=labels,
    )
    c_mem = GaugeMetricFamily(
        "container_memory_working_set_bytes",
        "[STABLE] Current working set of the container in bytes",
        labels=labels,
    )
    c_start = GaugeMetricFamily(
        "container_start_time_seconds",
        "[STABLE] Start time of the container since unix epoch in seconds",
        labels=labels,
    )
    n_cpu = CounterMetricFamily(
        "node_cpu_usage_seconds_total", "[STABLE] Cumulative cpu time consumed by the node in core-seconds"
    )
    n_mem = GaugeMetricFamily(
        "node_memory_working_set_bytes", "[STABLE] Current working set of the node in bytes"
    )
    p_cpu = CounterMetricFamily(
        "pod_cpu_usage_seconds_total",
        "[STABLE] Cumulative cpu time consumed by the pod in core-seconds",
        labels=["namespace", "pod"],
    )
    p_mem = GaugeMetricFamily(
        "pod_memory_working_set_bytes",
        "[STABLE] Current working set of the pod in bytes",
        labels=["namespace", "pod"],
    )
    error = GaugeMetricFamily(
        "scrape_error", "[ALPHA] 1 if there was an error while getting container metrics, 0 otherwise"
    )
    stats = [p.stats for p in scrape.pods]
    node_cpu = sum_cpu([s.cpu for s in stats]).core_nanoseconds
    node_mem = sum_memory([s.memory for s in stats]).working_set
    if node_cpu is not None:
        n_cpu.add_metric([], node_cpu / 1e9, timestamp=scrape.time)
    if node_mem is not None:
        n_mem.add_metric([], node_mem, timestamp=scrape.time)
    for p in scrape.pods:
        s, ns, name = p.stats, p.record.namespace or "default", p.record.name
        for c in s.containers:
            key = [c.name, ns, name]
            if c.cpu.core_nanoseconds is not None:
                c_cpu.add_metric(key, c.cpu.core_nanoseconds / 1e9, timestamp=s.time)
            if c.memory.working_set is not None:
                c_mem.add_metric(key, c.memory.working_set, timestamp=s.time)
            if c.start_time is not None:
                c_start.add_metric(key, c.start_time, timestamp=s.time)
        cpu, mem = pod_cpu(s).core_nanoseconds, pod_memory(s).working_set
        if cpu is not None:
            p_cpu.add_metric([ns, name], cpu / 1e9, timestamp=s.time)
        if mem is not None:
            p_mem.add_metric([ns, name], mem, timestamp=s.time)
    error.add_metric([], 1 if scrape.errors else 0)
    return render([c_cpu, c_mem, c_start, n_cpu, n_mem, p_cpu, p_mem, error])


def container_state(status: dict[str, Any]) -> str:
    """The runtime state the kubelet counts a container in: running, exited, created or unknown."""
    state = status.get("state") or {}
    if "running" in state:
        return "running"
    if "terminated" in state or ("waiting" in state and "terminated" in (status.get("lastState") or {})):
        return "exited"
    if "waiting" in state:
        return "created"
    return "unknown"


def node_metrics(node: str, records: Iterable[PodRecord], scrape: Scrape | None) -> bytes:
    """``/metrics``: the kubelet metrics the node's records can honestly answer, and the last stats scrape."""
    name = GaugeMetricFamily(
        "kubelet_node_name", "[ALPHA] The node's name. The count is always 1.", labels=["node"]
    )
    name.add_metric([node], 1)
    running = [r for r in records if r.phase in SCRAPED_PHASES and r.instance_id and not r.deleted]
    pods = GaugeMetricFamily("kubelet_running_pods", "[ALPHA] Number of pods that have a running pod sandbox")
    pods.add_metric([], len(running))
    counts = {"running": 0, "exited": 0, "created": 0, "unknown": 0}
    for r in running:
        for status in r.container_statuses:
            counts[container_state(status)] += 1
    containers = GaugeMetricFamily(
        "kubelet_running_containers",
        "[ALPHA] Number of containers currently running",
        labels=["container_state"],
    )
    for state, n in counts.items():
        containers.add_metric([state], n)
    families: list[Metric] = [name, pods, containers]
    if scrape is not None:
        left = GaugeMetricFamily(
            "vkec2_kubelet_stats_agents_left_out",
            "Agents that failed or did not answer in time in the last stats scrape",
        )
        left.add_metric([], scrape.errors)
        families.append(left)
    return render(families)


def stats_route(
    parts: Sequence[str],
    node: str,
    collector: StatsCollector,
    records: Callable[[], Iterable[PodRecord]],
    started: float,
) -> tuple[bytes, str] | None:
    """The answer (body, content type) to a GET of ``/stats/summary``, ``/metrics/resource`` or
    ``/metrics``; ``None`` for any other path."""
    path = list(parts)
    if path == ["stats", "summary"]:
        body = summary(node, collector.scrape(), started)
        return json.dumps(body).encode(), "application/json"
    if path == ["metrics", "resource"]:
        return resource_metrics(collector.scrape()), PROMETHEUS_TEXT
    if path == ["metrics"]:
        return node_metrics(node, records(), collector.last()), PROMETHEUS_TEXT
    return None
