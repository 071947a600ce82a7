"""GetStats: /proc parsers on fixed text, a real container's process group over gRPC, the simulator's figures.

The process runtime's numbers come from the kernel, so the gRPC test only asserts what must hold: a
busy container has burnt CPU time and holds resident memory, a second reading yields a rate, and
figures the platform cannot give stay unset (not zero) on the wire. The simulator's figures follow
from annotations and the clock exactly.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from agent.model import ContainerSnapshot, InvalidArgument, Running, Waiting
from agent.sim.runtime import SimRuntime
from agent.sim.stats import simulated_stats
from agent.stats import ContainerUsage, CpuUsage, InstanceStats, MemoryUsage, stats_of_pb, stats_pb
from agent.stats_linux import LinuxStats, parse_cpu, parse_memory, parse_net_dev, parse_pid_stat
from tests.agent.conftest import InProcessAgent, pod, sh
from tests.support.services import wait_until
from vkec2.domain.agents import AgentTarget
from vkec2.errors import AgentIdentityMismatch

STAT = "cpu  100 5 50 1000 20 3 2 1 0 0\ncpu0 50 2 25 500 10 1 1 0 0 0\nbtime 1700000000\n"
MEMINFO = (
    "MemTotal: 1000 kB\nMemFree: 400 kB\nMemAvailable: 700 kB\nInactive(file): 100 kB\nAnonPages: 250 kB\n"
)
NET_DEV = (
    "Inter-|   Receive |  Transmit\n"
    " face |bytes packets errs drop fifo frame compressed multicast|bytes ...\n"
    "    lo: 999 9 0 0 0 0 0 0 999 9 0 0 0 0 0 0\n"
    "  eth0: 1000 10 1 0 0 0 0 0 2000 20 2 0 0 0 0 0\n"
)


def test_proc_parsers_read_the_kernel_formats() -> None:
    busy, boot = parse_cpu(STAT, 100)
    assert busy == (100 + 5 + 50 + 3 + 2 + 1) * 10_000_000 and boot == 1_700_000_000
    mem = parse_memory(MEMINFO, "pgfault 42\npgmajfault 3\n")
    assert (mem.usage, mem.working_set, mem.rss, mem.available) == (
        600 * 1024,
        500 * 1024,
        250 * 1024,
        700 * 1024,
    )
    assert (mem.page_faults, mem.major_page_faults) == (42, 3)
    assert parse_memory("MemTotal: 1000 kB\n", None).usage is None  # unknown, not zero
    [eth0] = parse_net_dev(NET_DEV)
    assert (eth0.name, eth0.rx_bytes, eth0.tx_bytes, eth0.rx_errors, eth0.tx_errors) == (
        "eth0",
        1000,
        2000,
        1,
        2,
    )
    fields = (
        ["S", "1", "77", "77"]
        + ["0"] * 3
        + ["5", "0", "1", "0"]
        + ["30", "20", "7", "3"]
        + ["0"] * 6
        + ["40"]
    )
    assert parse_pid_stat("123 (sh (x)) " + " ".join(fields)) == (77, 60, 40, 5, 1)
    assert parse_pid_stat("garbage") is None


def test_unknown_figures_stay_unset_on_the_wire() -> None:
    stats = InstanceStats(
        1700000000.5,
        cpu=CpuUsage(core_nanoseconds=5),
        containers=(ContainerUsage("main", 1700000000.0, CpuUsage(0), MemoryUsage(rss=0)),),
        source="test",
    )
    msg = stats_pb(stats)
    assert not msg.cpu.HasField("usage_nano_cores") and msg.containers[0].cpu.HasField(
        "usage_core_nano_seconds"
    )
    assert not msg.HasField("root_fs") and not msg.memory.HasField("usage_bytes")
    back = stats_of_pb(msg)
    assert back.cpu == CpuUsage(5, None) and back.containers[0].memory == MemoryUsage(rss=0)
    assert back.root_fs is None and back.time == stats.time


def test_non_linux_reports_filesystems_only(tmp_path: Path) -> None:
    stats = LinuxStats(platform="darwin").read(tmp_path, [("main", 1, 5.0)])
    assert stats.cpu == CpuUsage() and stats.memory == MemoryUsage() and stats.interfaces == ()
    assert stats.containers == (ContainerUsage("main", 5.0),)
    assert stats.pod_fs is not None and stats.pod_fs.capacity and stats.pod_fs.path == str(tmp_path)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")
def test_process_runtime_measures_each_container_process_group(inproc_agent: InProcessAgent) -> None:
    a = inproc_agent
    busy = sh("busy", "while :; do :; done & sleep 30")  # the spinning child is in the container's group
    a.client.launch(a.target, pod(busy, sh("idle", "sleep 30")))
    wait_until(lambda: len(a.client.stats(a.target).containers) == 2, 10, "both containers running")
    first = a.client.stats(a.target)
    wait_until(
        lambda: (a.client.stats(a.target).containers[0].cpu.core_nanoseconds or 0) > 100_000_000,
        10,
        "the busy container to burn 0.1 s of CPU",
        interval=0.1,
    )
    stats = a.client.stats(a.target)
    by_name = {c.name: c for c in stats.containers}
    assert stats.source == "linux /proc" and stats.cpu.core_nanoseconds and stats.memory.available
    assert stats.root_fs is not None and stats.pod_fs is not None and stats.boot_time
    busy_cpu, idle_cpu = by_name["busy"].cpu.core_nanoseconds or 0, by_name["idle"].cpu.core_nanoseconds or 0
    assert busy_cpu > 10 * idle_cpu
    assert (by_name["busy"].memory.rss or 0) > 0 and by_name["busy"].start_time
    assert by_name["busy"].cpu.nano_cores is not None and by_name["busy"].cpu.nano_cores > 50_000_000
    assert first.time < stats.time
    a.client.terminate(a.target, 0)
    assert a.client.stats(a.target).containers == ()
    with pytest.raises(AgentIdentityMismatch, match="instance ID mismatch"):  # like every lifecycle call
        a.client.stats(AgentTarget(a.target.endpoint, "i-someone-else"))


def test_simulated_stats_follow_annotations_and_the_clock() -> None:
    running = ContainerSnapshot(name="web", image="x", state=Running(100.0))
    waiting = ContainerSnapshot(name="side", image="x", state=Waiting("ContainerCreating"))
    notes = {"sim.vkec2.io/cpu-millicores": "3", "sim.vkec2.io/memory-bytes": str(12 * 1024 * 1024)}
    stats = simulated_stats(notes, [running, waiting], 90.0, 110.0)
    [web] = stats.containers
    assert web.cpu == CpuUsage(3_000_000 * 10, 3_000_000) and web.memory.working_set == 12 * 1024 * 1024
    assert stats.cpu.core_nanoseconds == 20_000_000 * 20 + 30_000_000 and stats.boot_time == 90.0
    with pytest.raises(InvalidArgument, match="cpu-millicores"):
        simulated_stats({"sim.vkec2.io/cpu-millicores": "lots"}, [running], 90.0, 110.0)
    bad = pod(sh("main", "true"), annotations={"sim.vkec2.io/memory-bytes": "-1"})
    with pytest.raises(InvalidArgument, match="memory-bytes must not be negative"):
        SimRuntime().launch(json.dumps(bad))  # refused at launch, not at the first scrape
