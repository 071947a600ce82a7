"""How the process runtime measures its instance: ``/proc`` on Linux, ``statvfs`` everywhere, else unknown.

Stdlib only (the agent needs nothing but grpcio and protobuf), because what is read is a handful of
kernel text files no library would save much of. On Linux: node CPU is the non-idle jiffies of
``/proc/stat`` (user, nice, system, irq, softirq, steal) in nanoseconds; memory comes from
``/proc/meminfo`` (usage = MemTotal - MemFree, working set = usage - Inactive(file) as cAdvisor
counts it, RSS = AnonPages, available = MemAvailable) and page faults from ``/proc/vmstat``;
network is ``/proc/net/dev`` (loopback left out); the boot time is ``btime``. A container is its
process group: the CPU time (utime + stime, plus cutime + cstime of reaped children) and resident
pages of every live process whose ``/proc/PID/stat`` names the group; its working set is its RSS
(page cache is not attributed to processes). Current usage (nanocores) is the rate between this
reading and the previous one at least :data:`MIN_RATE_INTERVAL` earlier, so the first reading has
none. Filesystems (capacity, used, available, inodes) come from :func:`os.statvfs` on every
platform. On other platforms (macOS) CPU, memory, network and per-container figures are unknown.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterable
from contextlib import suppress
from pathlib import Path

from agent.stats import ContainerUsage, CpuUsage, FsUsage, InstanceStats, InterfaceUsage, MemoryUsage

MIN_RATE_INTERVAL = 1.0  # seconds between two readings for a current-usage rate


def _clock_ticks() -> int:
    with suppress(ValueError, OSError, AttributeError):
        return int(os.sysconf("SC_CLK_TCK"))
    return 100


def _page_size() -> int:
    with suppress(ValueError, OSError, AttributeError):
        return int(os.sysconf("SC_PAGE_SIZE"))
    return 4096


def fs_usage(path: str | Path) -> FsUsage | None:
    """The filesystem holding ``path`` (``None`` if it cannot be read)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return FsUsage(
        str(path),
        capacity=st.f_blocks * st.f_frsize,
        used=(st.f_blocks - st.f_bfree) * st.f_frsize,
        available=st.f_bavail * st.f_frsize,
        inodes=st.f_files,
        inodes_free=st.f_ffree,
    )


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def parse_cpu(stat: str, ticks: int) -> tuple[int | None, float | None]:
    """(busy core-nanoseconds, boot time) of ``/proc/stat``."""
    busy: int | None = None
    boot: float | None = None
    for line in stat.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu" and len(parts) >= 8:
            values = [int(x) for x in parts[1:9]]
            user, nice, system, _idle, _iowait, irq, softirq = values[:7]
            steal = values[7] if len(values) > 7 else 0
            busy = (user + nice + system + irq + softirq + steal) * 1_000_000_000 // ticks
        elif parts and parts[0] == "btime" and len(parts) == 2:
            boot = float(parts[1])
    return busy, boot


def parse_memory(meminfo: str, vmstat: str | None) -> MemoryUsage:
    """Node memory of ``/proc/meminfo`` (kB) and ``/proc/vmstat`` (fault counts)."""
    kb: dict[str, int] = {}
    for line in meminfo.splitlines():
        key, _, rest = line.partition(":")
        fields = rest.split()
        if fields and fields[0].isdigit():
            kb[key.strip()] = int(fields[0]) * 1024
    counts: dict[str, int] = {}
    for line in (vmstat or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    total, free = kb.get("MemTotal"), kb.get("MemFree")
    usage = total - free if total is not None and free is not None else None
    inactive = kb.get("Inactive(file)")
    working = max(0, usage - inactive) if usage is not None and inactive is not None else usage
    return MemoryUsage(
        working_set=working,
        usage=usage,
        rss=kb.get("AnonPages"),
        available=kb.get("MemAvailable"),
        page_faults=counts.get("pgfault"),
        major_page_faults=counts.get("pgmajfault"),
    )


def parse_net_dev(text: str) -> tuple[InterfaceUsage, ...]:
    """Interfaces of ``/proc/net/dev`` but loopback."""
    out = []
    for line in text.splitlines()[2:]:
        name, _, rest = line.partition(":")
        fields = rest.split()
        name = name.strip()
        if name == "lo" or len(fields) < 11:
            continue
        out.append(InterfaceUsage(name, int(fields[0]), int(fields[8]), int(fields[2]), int(fields[10])))
    return tuple(out)


def parse_pid_stat(text: str) -> tuple[int, int, int, int, int] | None:
    """(pgrp, utime+stime+cutime+cstime ticks, rss pages, minor, major faults) of ``/proc/PID/stat``."""
    _, sep, rest = text.rpartition(")")
    if not sep:
        return None
    f = rest.split()  # f[0] is field 3 (state): field N is f[N - 3]
    if len(f) < 22:
        return None
    ticks = int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
    return int(f[2]), ticks, int(f[21]), int(f[7]), int(f[9])


class LinuxStats:
    """Reads the instance and its containers' process groups; keeps the last readings for rates."""

    def __init__(self, proc: Path = Path("/proc"), platform: str = sys.platform) -> None:
        self.proc = proc
        self.linux = platform.startswith("linux")
        self.ticks = _clock_ticks()
        self.page = _page_size()
        self._lock = threading.Lock()
        self._last: dict[str, tuple[float, int]] = {}

    def _rate(self, key: str, now: float, core_ns: int | None) -> int | None:
        """Nanocores since the previous reading of ``key`` at least MIN_RATE_INTERVAL ago."""
        if core_ns is None:
            return None
        with self._lock:
            last = self._last.get(key)
            if last is None or now - last[0] >= MIN_RATE_INTERVAL or core_ns < last[1]:
                self._last[key] = (now, core_ns)
            if last is None or now <= last[0] or core_ns < last[1]:
                return None
            return int((core_ns - last[1]) / (now - last[0]))

    def _groups(self, pgids: set[int]) -> dict[int, tuple[int, int, int, int]]:
        totals: dict[int, tuple[int, int, int, int]] = {}
        if not pgids:
            return totals
        for entry in self.proc.iterdir():
            if not entry.name.isdigit():
                continue
            text = _read(entry / "stat")
            parsed = parse_pid_stat(text) if text else None
            if parsed is None or parsed[0] not in pgids:
                continue
            pg, ticks, rss, minflt, majflt = parsed
            t = totals.get(pg, (0, 0, 0, 0))
            totals[pg] = (t[0] + ticks, t[1] + rss, t[2] + minflt, t[3] + majflt)
        return totals

    def read(
        self, pod_dir: str | Path | None, groups: Iterable[tuple[str, int | None, float | None]]
    ) -> InstanceStats:
        """The instance now; ``groups`` are (container, process group or None, start time) of running ones."""
        now = time.time()
        groups = list(groups)
        root, pod_fs = fs_usage("/"), fs_usage(pod_dir) if pod_dir is not None else None
        if not self.linux:
            unknown = tuple(ContainerUsage(name, started) for name, _, started in groups)
            return InstanceStats(
                now,
                root_fs=root,
                pod_fs=pod_fs,
                containers=unknown,
                source=f"statvfs only ({sys.platform})",
            )
        stat = _read(self.proc / "stat") or ""
        core_ns, boot = parse_cpu(stat, self.ticks)
        memory = parse_memory(_read(self.proc / "meminfo") or "", _read(self.proc / "vmstat"))
        usage = self._groups({pg for _, pg, _ in groups if pg is not None})
        containers: list[ContainerUsage] = []
        for name, pg, started in groups:
            found = usage.get(pg) if pg is not None else None
            if found is None:
                containers.append(ContainerUsage(name, started))
                continue
            ns = found[0] * 1_000_000_000 // self.ticks
            rss = found[1] * self.page
            containers.append(
                ContainerUsage(
                    name,
                    started,
                    CpuUsage(ns, self._rate(f"container/{name}/{pg}", now, ns)),
                    MemoryUsage(
                        working_set=rss,
                        usage=rss,
                        rss=rss,
                        page_faults=found[2] + found[3],
                        major_page_faults=found[3],
                    ),
                )
            )
        with self._lock:  # forget the rates of container runs that are gone
            live = {"node"} | {f"container/{name}/{pg}" for name, pg, _ in groups}
            self._last = {k: v for k, v in self._last.items() if k in live}
        return InstanceStats(
            now,
            boot_time=boot,
            cpu=CpuUsage(core_ns, self._rate("node", now, core_ns)),
            memory=memory,
            root_fs=root,
            pod_fs=pod_fs,
            interfaces=parse_net_dev(_read(self.proc / "net" / "dev") or ""),
            containers=tuple(containers),
            source="linux /proc",
        )
