"""A metrics-server stand-in for tests: reads kubelet stats as metrics-server does, prints ``kubectl top``.

:func:`from_resource_metrics` parses ``/metrics/resource`` with :mod:`prometheus_client.parser`
and keeps, per container, the cumulative CPU seconds with their sample timestamp and the working
set, as metrics-server ≥ 0.6 does; :func:`from_summary` reads the same out of ``/stats/summary``
with the Summary API's field names (``podRef``, ``usageCoreNanoSeconds``, ``workingSetBytes``...).
:func:`pod_usage` turns two scrapes into per-pod CPU (the rate of the cumulative counter between
them, in millicores) and memory (bytes), and :func:`top_pods` prints them as ``kubectl top pod``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from vkec2.domain.times import parse_rfc3339

PodKey = tuple[str, str]  # (namespace, pod)


@dataclass(frozen=True)
class Point:
    """One container at one scrape: cumulative CPU seconds, when measured (s), working set bytes."""

    cpu_seconds: float
    timestamp: float
    memory: float


Scrape = dict[PodKey, dict[str, Point]]


def from_resource_metrics(text: str) -> Scrape:
    """Containers of a ``/metrics/resource`` text (a sample without a timestamp fails the test)."""
    cpu: dict[tuple[str, str, str], tuple[float, float]] = {}
    mem: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name not in ("container_cpu_usage_seconds_total", "container_memory_working_set_bytes"):
                continue
            key = (s.labels["namespace"], s.labels["pod"], s.labels["container"])
            assert s.timestamp is not None, f"{s.name} of {key} has no timestamp"
            if s.name == "container_cpu_usage_seconds_total":
                cpu[key] = (s.value, float(s.timestamp))
            else:
                mem[key] = s.value
    out: Scrape = {}
    for key, (seconds, ts) in cpu.items():
        if key in mem:
            out.setdefault((key[0], key[1]), {})[key[2]] = Point(seconds, ts, mem[key])
    return out


def from_summary(doc: dict[str, Any]) -> Scrape:
    """Containers of a ``/stats/summary`` document."""
    out: Scrape = {}
    for pod in doc["pods"]:
        ref = pod["podRef"]
        for c in pod["containers"]:
            cpu, memory = c.get("cpu") or {}, c.get("memory") or {}
            if "usageCoreNanoSeconds" not in cpu or "workingSetBytes" not in memory:
                continue
            when = parse_rfc3339(cpu["time"])
            assert when is not None
            out.setdefault((ref["namespace"], ref["name"]), {})[c["name"]] = Point(
                cpu["usageCoreNanoSeconds"] / 1e9, when, float(memory["workingSetBytes"])
            )
    return out


def container_usage(before: Scrape, after: Scrape) -> dict[PodKey, dict[str, tuple[float, float]]]:
    """(CPU millicores, memory bytes) per container of the pods whose containers all advanced."""
    usage: dict[PodKey, dict[str, tuple[float, float]]] = {}
    for pod, containers in after.items():
        earlier = before.get(pod, {})
        rates: dict[str, tuple[float, float]] = {}
        for name, p in containers.items():
            q = earlier.get(name)
            if q is None or p.timestamp <= q.timestamp or p.cpu_seconds < q.cpu_seconds:
                break
            rates[name] = ((p.cpu_seconds - q.cpu_seconds) / (p.timestamp - q.timestamp) * 1000, p.memory)
        else:
            usage[pod] = rates
    return usage


def pod_usage(before: Scrape, after: Scrape) -> dict[PodKey, tuple[float, float]]:
    """(CPU millicores, memory bytes) per pod: the sum over its containers, as ``kubectl top`` shows."""
    return {
        pod: (sum(c[0] for c in cs.values()), sum(c[1] for c in cs.values()))
        for pod, cs in container_usage(before, after).items()
    }


def top_pods(usage: dict[PodKey, tuple[float, float]], namespace: str = "default") -> str:
    """``kubectl top pod`` output for the pods of ``namespace``."""
    rows = [("NAME", "CPU(cores)", "MEMORY(bytes)")]
    for (ns, name), (millicores, memory) in sorted(usage.items()):
        if ns == namespace:
            rows.append((name, f"{round(millicores)}m", f"{int(memory) // (1024 * 1024)}Mi"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(
        "   ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )
