"""Resource usage as the agent reports it (``GetStats``): the model, and its protobuf form both ways.

An :class:`InstanceStats` is the agent's view of its instance at one moment: node CPU (cumulative
core-nanoseconds and, where two readings allow it, current nanocores), memory, the root
filesystem and the filesystem of the pod's directory, network bytes per interface, and the CPU
time and memory of each running container's processes. Every figure the agent cannot measure is
``None`` and travels as an unset ``optional`` field, so the fleet can tell "unknown" from zero.
How the process runtime measures is in :mod:`agent.stats_linux`; the simulator reports figures of
its own (:mod:`agent.sim.stats`). :func:`stats_pb` and :func:`stats_of_pb` convert for the wire;
the fleet's client uses the latter, so both sides share one model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from agent.v1 import agent_pb2


@dataclass(frozen=True)
class CpuUsage:
    """Cumulative CPU time (ns, summed over cores) and current usage (nanocores); ``None``: unknown."""

    core_nanoseconds: int | None = None
    nano_cores: int | None = None


@dataclass(frozen=True)
class MemoryUsage:
    """Memory figures in bytes (faults as counts); ``None``: unknown."""

    working_set: int | None = None
    usage: int | None = None
    rss: int | None = None
    available: int | None = None
    page_faults: int | None = None
    major_page_faults: int | None = None


@dataclass(frozen=True)
class FsUsage:
    """One filesystem (the one holding ``path``): bytes and inodes; ``None``: unknown."""

    path: str
    capacity: int | None = None
    used: int | None = None
    available: int | None = None
    inodes: int | None = None
    inodes_free: int | None = None


@dataclass(frozen=True)
class InterfaceUsage:
    """Cumulative bytes and errors of one network interface."""

    name: str
    rx_bytes: int = 0
    tx_bytes: int = 0
    rx_errors: int = 0
    tx_errors: int = 0


@dataclass(frozen=True)
class ContainerUsage:
    """One running container: its current run's start (epoch seconds) and its processes' usage."""

    name: str
    start_time: float | None = None
    cpu: CpuUsage = field(default_factory=CpuUsage)
    memory: MemoryUsage = field(default_factory=MemoryUsage)


@dataclass(frozen=True)
class InstanceStats:
    """The instance at ``time`` (epoch seconds): node-wide figures and its running containers."""

    time: float
    boot_time: float | None = None
    cpu: CpuUsage = field(default_factory=CpuUsage)
    memory: MemoryUsage = field(default_factory=MemoryUsage)
    root_fs: FsUsage | None = None
    pod_fs: FsUsage | None = None
    interfaces: tuple[InterfaceUsage, ...] = ()
    containers: tuple[ContainerUsage, ...] = ()
    source: str = ""


_MEMORY = ("working_set", "usage", "rss", "available", "page_faults", "major_page_faults")
_MEMORY_PB = (
    "working_set_bytes",
    "usage_bytes",
    "rss_bytes",
    "available_bytes",
    "page_faults",
    "major_page_faults",
)
_FS = ("capacity", "used", "available", "inodes", "inodes_free")
_FS_PB = ("capacity_bytes", "used_bytes", "available_bytes", "inodes", "inodes_free")


def _ts(seconds: float | None) -> Timestamp | None:
    if seconds is None:
        return None
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1_000_000_000))
    return ts


def _set(msg: Any, names: tuple[str, ...], values: tuple[int | None, ...]) -> None:
    for name, value in zip(names, values, strict=True):
        if value is not None:
            setattr(msg, name, max(0, int(value)))


def _get(msg: Any, names: tuple[str, ...]) -> list[int | None]:
    return [int(getattr(msg, n)) if msg.HasField(n) else None for n in names]


def cpu_pb(c: CpuUsage) -> agent_pb2.CpuUsage:
    msg = agent_pb2.CpuUsage()
    _set(msg, ("usage_core_nano_seconds", "usage_nano_cores"), (c.core_nanoseconds, c.nano_cores))
    return msg


def memory_pb(m: MemoryUsage) -> agent_pb2.MemoryUsage:
    msg = agent_pb2.MemoryUsage()
    _set(msg, _MEMORY_PB, tuple(getattr(m, n) for n in _MEMORY))
    return msg


def fs_pb(f: FsUsage | None) -> agent_pb2.FsUsage | None:
    if f is None:
        return None
    msg = agent_pb2.FsUsage(path=f.path)
    _set(msg, _FS_PB, tuple(getattr(f, n) for n in _FS))
    return msg


def stats_pb(s: InstanceStats) -> agent_pb2.InstanceStats:
    """The wire form of ``s`` (unknown figures stay unset)."""
    return agent_pb2.InstanceStats(
        time=_ts(s.time),
        boot_time=_ts(s.boot_time),
        cpu=cpu_pb(s.cpu),
        memory=memory_pb(s.memory),
        root_fs=fs_pb(s.root_fs),
        pod_fs=fs_pb(s.pod_fs),
        interfaces=[
            agent_pb2.InterfaceUsage(
                name=i.name,
                rx_bytes=i.rx_bytes,
                tx_bytes=i.tx_bytes,
                rx_errors=i.rx_errors,
                tx_errors=i.tx_errors,
            )
            for i in s.interfaces
        ],
        containers=[
            agent_pb2.ContainerUsage(
                name=c.name, start_time=_ts(c.start_time), cpu=cpu_pb(c.cpu), memory=memory_pb(c.memory)
            )
            for c in s.containers
        ],
        source=s.source,
    )


def _cpu(msg: Any) -> CpuUsage:
    core, nano = _get(msg, ("usage_core_nano_seconds", "usage_nano_cores"))
    return CpuUsage(core, nano)


def _memory(msg: Any) -> MemoryUsage:
    return MemoryUsage(*_get(msg, _MEMORY_PB))


def _fs(parent: Any, name: str) -> FsUsage | None:
    if not parent.HasField(name):
        return None
    msg = getattr(parent, name)
    return FsUsage(msg.path, *_get(msg, _FS_PB))


def stats_of_pb(msg: Any) -> InstanceStats:
    """The :class:`InstanceStats` of an ``InstanceStats`` message."""
    return InstanceStats(
        time=msg.time.ToNanoseconds() / 1e9 if msg.HasField("time") else 0.0,
        boot_time=msg.boot_time.ToNanoseconds() / 1e9 if msg.HasField("boot_time") else None,
        cpu=_cpu(msg.cpu),
        memory=_memory(msg.memory),
        root_fs=_fs(msg, "root_fs"),
        pod_fs=_fs(msg, "pod_fs"),
        interfaces=tuple(
            InterfaceUsage(i.name, i.rx_bytes, i.tx_bytes, i.rx_errors, i.tx_errors) for i in msg.interfaces
        ),
        containers=tuple(
            ContainerUsage(
                c.name,
                c.start_time.ToNanoseconds() / 1e9 if c.HasField("start_time") else None,
                _cpu(c.cpu),
                _memory(c.memory),
            )
            for c in msg.containers
        ),
        source=msg.source,
    )
