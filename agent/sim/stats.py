"""What a simulated agent reports to ``GetStats``: plausible figures that follow from the pod and the clock.

Nothing runs, so nothing is measured. Each running container uses a steady
``sim.vkec2.io/cpu-millicores`` (default 5) and ``sim.vkec2.io/memory-bytes`` (default 12 MiB), so
its cumulative CPU time is that rate times its running time and ``kubectl top`` can be predicted
exactly. The instance adds a base load (:data:`BASE_MILLICORES`, :data:`BASE_MEMORY`) to its
containers' and "booted" when the pod was launched; it has a 1 GiB memory, a 8 GiB root
filesystem, and an ``eth0`` whose byte counts grow with the clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from agent.model import ContainerSnapshot, InvalidArgument, Running
from agent.stats import ContainerUsage, CpuUsage, FsUsage, InstanceStats, InterfaceUsage, MemoryUsage

CPU_ANNOTATION = "sim.vkec2.io/cpu-millicores"
MEMORY_ANNOTATION = "sim.vkec2.io/memory-bytes"
DEFAULT_MILLICORES = 5.0
DEFAULT_MEMORY = 12 * 1024 * 1024
BASE_MILLICORES = 20.0
BASE_MEMORY = 96 * 1024 * 1024
MEMORY_TOTAL = 1024 * 1024 * 1024
DISK_TOTAL = 8 * 1024 * 1024 * 1024
DISK_USED = 2 * 1024 * 1024 * 1024


def _number(annotations: Mapping[str, str], key: str, default: float) -> float:
    raw = annotations.get(key)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise InvalidArgument(f"annotation {key} must be a number, got {raw!r}") from None
    if value < 0:
        raise InvalidArgument(f"annotation {key} must not be negative, got {raw!r}")
    return value


def simulated_stats(
    annotations: Mapping[str, str],
    statuses: Sequence[ContainerSnapshot],
    launched_at: float | None,
    now: float,
) -> InstanceStats:
    """The instance at ``now`` for a pod launched at ``launched_at`` (None: no pod) in these states."""
    millicores = _number(annotations, CPU_ANNOTATION, DEFAULT_MILLICORES)
    memory = int(_number(annotations, MEMORY_ANNOTATION, DEFAULT_MEMORY))
    containers = []
    for c in statuses:
        if not isinstance(c.state, Running):
            continue
        ran = max(0.0, now - c.state.started_at)
        containers.append(
            ContainerUsage(
                c.name,
                c.state.started_at,
                CpuUsage(int(millicores * 1e6 * ran), int(millicores * 1e6)),
                MemoryUsage(working_set=memory, usage=memory, rss=memory, page_faults=0, major_page_faults=0),
            )
        )
    boot = launched_at if launched_at is not None else now
    up = max(0.0, now - boot)
    node_ns = int(BASE_MILLICORES * 1e6 * up) + sum(c.cpu.core_nanoseconds or 0 for c in containers)
    used = BASE_MEMORY + memory * len(containers)
    return InstanceStats(
        now,
        boot_time=boot,
        cpu=CpuUsage(node_ns, int((BASE_MILLICORES + millicores * len(containers)) * 1e6)),
        memory=MemoryUsage(
            working_set=used,
            usage=used,
            rss=used,
            available=MEMORY_TOTAL - used,
            page_faults=0,
            major_page_faults=0,
        ),
        root_fs=FsUsage("/", DISK_TOTAL, DISK_USED, DISK_TOTAL - DISK_USED, 524288, 400000),
        pod_fs=FsUsage("/var/lib/vkec2", DISK_TOTAL, DISK_USED, DISK_TOTAL - DISK_USED, 524288, 400000),
        interfaces=(InterfaceUsage("eth0", int(up * 2048), int(up * 1024)),),
        containers=tuple(containers),
        source="simulated",
    )
