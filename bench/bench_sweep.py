"""Benchmark: one health-sweep pass over 1,000 and 10,000 Running pods: wall time, CPU, EC2 calls.

Starts its own Redis, moto's server, the AWS-like endpoint (:class:`tests.support.ec2proxy.Ec2Proxy`,
in a child process so that its CPU is not the sweep's; it counts the EC2 calls of a pass) and the
agent simulator. It launches the instances straight into moto (1,000 per RunInstances; moto's own
time is reported apart, it is not the sweep's cost), writes a Running pod record for each through the
store's own API (as the fleet writes them), launches a simulated workload on each agent, then runs
:class:`vkec2.fleet.sweep.HealthSweep` in this process, as the ``vkec2.health.sweep`` task does, with
the worker's own fleet context (:func:`tasks.runtime.build_fleet`). One moto serves both sizes: the
1,000-pod figures are taken first, then 9,000 more pods are added. Each size gets a first pass (every
pod's first check is written) and steady passes (nothing changed, nothing written); the clock handed
to the sweep moves one interval between passes so every pod is due. Figures: steady-pass wall time and
CPU seconds of this process (``resource.getrusage``: the sweep's threads included, moto's, Redis's,
the endpoint's and the simulator's processes not; their CPU is printed beside), DescribeInstances per
1,000 pods. Plot: ``docs/img/sweep.png``. ``--quick``: 1,000 pods only, 2 steady passes.
Run: ``PYTHONPATH=. python bench/bench_sweep.py [--quick]``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import botocore.config
import psutil

from bench.common import PLOTS_DIR, Figure, Result, write_result
from tests.support.fleet import NODE, TEST_AMI, FleetHarness, example_pod
from tests.support.services import wait_until
from vkec2.agent_client.client import AgentClient
from vkec2.cli.procs import ManagedProcess, start_agent_sim, start_moto, start_redis
from vkec2.contract import TAG_CLUSTER
from vkec2.domain.agents import AgentTarget
from vkec2.domain.instances import Instance
from vkec2.domain.models import Phase, PodRecord
from vkec2.ec2.gateway import jsonable
from vkec2.fleet.sweep import Check, HealthSweep, SweepReport

REGION = "us-west-2"
BATCH = 500


def proxy_child(moto_url: str, conn: Connection) -> None:
    """The AWS-like endpoint in its own process; answers ``calls`` (and resets the count) and ``stop``."""
    from tests.support.ec2proxy import Ec2Proxy

    proxy = Ec2Proxy(moto_url).start()
    conn.send(proxy.url)
    while True:
        command = conn.recv()
        if command == "calls":
            conn.send(dict(proxy.calls))
            proxy.calls.clear()
        else:
            proxy.stop()
            conn.send("stopped")
            return


def cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_of(pid: int) -> float:
    """CPU seconds of a process and its children (moto's server runs in one process)."""
    try:
        proc = psutil.Process(pid)
        total = sum(proc.cpu_times()[:2])
        for child in proc.children(recursive=True):
            total += sum(child.cpu_times()[:2])
        return float(total)
    except psutil.NoSuchProcess:
        return 0.0


@dataclass
class Pass:
    pods: int
    first: bool
    wall: float
    cpu: float
    ec2_wait: float
    calls: dict[str, int]
    others: dict[str, float]
    parts: dict[str, float]
    report: dict[str, Any] = field(default_factory=dict)


class Bench:
    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.procs: list[ManagedProcess] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="vkec2-bench-sweep-"))
        self.proxy: multiprocessing.process.BaseProcess | None = None
        self.conn: Connection | None = None
        self.instances: list[dict[str, Any]] = []
        self.uids: list[str] = []
        self.passes: list[Pass] = []
        self.offset = 0.0
        self.moto_launch_seconds = 0.0

    # -- set-up --------------------------------------------------------------------------

    def start(self, total: int) -> None:
        env = {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
        }
        os.environ.update(env)
        import boto3

        redis, redis_url = start_redis()
        self.procs.append(redis)
        self.redis_pid = redis.pid
        moto, moto_url = start_moto()
        self.procs.append(moto)
        self.moto_pid = moto.pid
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        self.proxy = ctx.Process(target=proxy_child, args=(moto_url, child), daemon=True)
        self.proxy.start()
        self.conn = parent
        proxy_url = str(parent.recv())
        # The instances go straight to moto: the endpoint counts the sweep's calls only.
        # moto slows down as it holds more instances: a 1,000-instance launch can take minutes.
        slow = botocore.config.Config(read_timeout=900, retries={"total_max_attempts": 1})
        ec2 = boto3.client("ec2", endpoint_url=moto_url, region_name=REGION, config=slow)
        self.cluster = f"bench-sweep-{os.getpid()}"
        started = time.perf_counter()
        # A default subnet (/20) holds about 4,000 addresses: spread the instances over all of them.
        subnets = [s["SubnetId"] for s in ec2.describe_subnets()["Subnets"] if s.get("DefaultForAz")]
        while len(self.instances) < total:
            n = min(BATCH, total - len(self.instances))
            out = ec2.run_instances(
                SubnetId=subnets[len(self.instances) // BATCH % len(subnets)],
                ImageId=TEST_AMI,
                InstanceType="m5.large",
                MinCount=n,
                MaxCount=n,
                TagSpecifications=[
                    {"ResourceType": "instance", "Tags": [{"Key": TAG_CLUSTER, "Value": self.cluster}]}
                ],
            )
            self.instances += [jsonable(i) for i in out["Instances"]]
        self.moto_launch_seconds = time.perf_counter() - started
        print(f"moto: {total} instances launched in {self.moto_launch_seconds:.1f}s (not the sweep's cost)")
        started = time.perf_counter()
        sim, self.sim_endpoint = start_agent_sim(
            moto_url,
            region=REGION,
            extra_args=["--refresh-interval", "600", "--log-level", "WARNING"],
            timeout=600,
            env={**os.environ, **env},
        )
        self.procs.append(sim)
        self.sim_pid = sim.pid
        print(f"agent simulator: listening after {time.perf_counter() - started:.1f}s")
        self.fleet = FleetHarness(
            self.tmp,
            f"{redis_url}/0",
            proxy_url,
            self.sim_endpoint,
            {
                "cluster_name": self.cluster,
                "health": {"interval_seconds": 10},
                "aws": {"endpoint_url": proxy_url, "read_timeout_seconds": 60, "max_attempts": 2},
            },
        )
        os.environ["VKEC2_CONFIG"] = str(self.fleet.config_path)  # importing tasks loads it
        from tasks.runtime import build_fleet

        self.ctx = build_fleet(self.fleet.settings)
        self.published: list[tuple[str, str]] = []
        self.ec2_wait = 0.0
        self.parts: dict[str, list[float]] = {"describe": [], "impaired": [], "agent checks": []}
        describe, impaired = self.ctx.ec2.describe, self.ctx.ec2.impaired

        def timed_describe(ids: Iterable[str]) -> dict[str, Instance]:
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                return describe(ids)
            finally:
                self.ec2_wait += time.perf_counter() - t0
                self.parts["describe"].append(time.thread_time() - c0)

        def timed_impaired() -> dict[str, str]:
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                return impaired()
            finally:
                self.ec2_wait += time.perf_counter() - t0
                self.parts["impaired"].append(time.thread_time() - c0)

        self.ctx.ec2.describe = timed_describe  # type: ignore[method-assign,assignment]
        self.ctx.ec2.impaired = timed_impaired  # type: ignore[method-assign]

    def seed(self, count: int) -> None:
        """Running pod records (and launched workloads) for the next ``count`` instances."""
        started = time.perf_counter()
        store = self.fleet.store
        first = len(self.uids)
        agents = AgentClient(self.ctx.settings.agent)

        def one(i: int) -> str:
            inst = dict(self.instances[i])
            pod = example_pod(f"sweep-{i}")
            store.put_desired(pod, NODE)
            uid = str(pod["metadata"]["uid"])
            inst["State"] = {"Code": 16, "Name": "running"}
            with store.locked(uid) as lock:
                lock.write(
                    {
                        "phase": Phase.RUNNING.value,
                        "instance": inst,
                        "instance_id": inst["InstanceId"],
                        "endpoint": self.sim_endpoint,
                        "launched_at": 1.0,
                    }
                )
            target = AgentTarget(endpoint=self.sim_endpoint, instance_id=inst["InstanceId"])
            wait_until(
                lambda: agents.serving(target), 120, f"the agent of {inst['InstanceId']}", interval=0.2
            )
            agents.launch(target, pod)
            return uid

        with ThreadPoolExecutor(8) as pool:
            self.uids += list(pool.map(one, range(first, first + count)))
        agents.close()
        print(f"seeded {count} Running pods (records + workloads) in {time.perf_counter() - started:.1f}s")

    # -- the measurement -----------------------------------------------------------------

    def calls(self) -> dict[str, int]:
        assert self.conn is not None
        self.conn.send("calls")
        return dict(self.conn.recv())

    def run_pass(self, first: bool) -> Pass:
        self.offset += self.ctx.settings.health.interval_seconds  # every pod is due again
        offset = self.offset
        sweep = HealthSweep(
            self.ctx.settings,
            self.ctx.store,
            self.ctx.ec2,
            self.ctx.agents,
            self.ctx.lifecycle,
            lambda task, uid: self.published.append((task, uid)),
            clock=lambda: time.time() + offset,
        )
        check = sweep.check

        def timed_check(rec: PodRecord) -> Check:
            c0 = time.thread_time()
            try:
                return check(rec)
            finally:
                self.parts["agent checks"].append(time.thread_time() - c0)  # list.append: thread-safe

        sweep.check = timed_check  # type: ignore[method-assign]
        for values in self.parts.values():
            values.clear()
        self.calls()  # reset the endpoint's count
        others_before = {name: cpu_of(pid) for name, pid in self.others().items()}
        self.ec2_wait = 0.0
        cpu0, wall0 = cpu_self(), time.perf_counter()
        report: SweepReport = sweep.run()
        wall, cpu = time.perf_counter() - wall0, cpu_self() - cpu0
        others = {name: cpu_of(pid) - others_before[name] for name, pid in self.others().items()}
        parts = {name: sum(values) for name, values in self.parts.items()}
        parts["rest"] = cpu - sum(parts.values())
        result = Pass(
            len(self.uids), first, wall, cpu, self.ec2_wait, self.calls(), others, parts, report.summary()
        )
        print(
            f"{'first' if first else 'steady'} pass, {result.pods} pods: {wall:.2f}s wall "
            f"({self.ec2_wait:.2f}s waiting for EC2), {cpu:.2f} CPU-s in this process; "
            f"EC2 calls {result.calls}; CPU-s by part "
            + ", ".join(f"{k} {v:.2f}" for k, v in parts.items())
            + "; other processes' CPU-s "
            + ", ".join(f"{k} {v:.2f}" for k, v in others.items())
            + f"; report {result.report}"
        )
        self.passes.append(result)
        return result

    def others(self) -> dict[str, int]:
        assert self.proxy is not None and self.proxy.pid is not None
        return {
            "moto": self.moto_pid,
            "endpoint": self.proxy.pid,
            "simulator": self.sim_pid,
            "redis": self.redis_pid,
        }

    def stop(self) -> None:
        if self.conn is not None and self.proxy is not None and self.proxy.is_alive():
            self.conn.send("stop")
            self.conn.recv()
            self.proxy.join(10)
        for proc in reversed(self.procs):
            proc.stop()


def steady(passes: list[Pass], pods: int) -> list[Pass]:
    return [p for p in passes if p.pods == pods and not p.first]


def plot(passes: list[Pass], sizes: list[int]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    walls = [statistics.median(p.wall for p in steady(passes, n)) for n in sizes]
    cpus = [statistics.median(p.cpu for p in steady(passes, n)) for n in sizes]
    firsts = [next(p.wall for p in passes if p.pods == n and p.first) for n in sizes]
    ax.plot(sizes, walls, "o-", label="steady pass, wall s")
    ax.plot(sizes, cpus, "s-", label="steady pass, CPU s (sweep process)")
    ax.plot(sizes, firsts, "^--", label="first pass, wall s")
    ax.axhline(10, color="grey", linestyle=":", label="interval (10 s)")
    ax.plot(sizes, [n / 1000 for n in sizes], color="red", linestyle=":", label="CPU goal (1 s / 1,000 pods)")
    ax.set_xlabel("Running pods")
    ax.set_ylabel("seconds")
    ax.set_title("Health sweep: one pass")
    ax.legend(fontsize=7)
    fig.tight_layout()
    PLOTS_DIR.mkdir(parents=True, exist_ok=True)
    path = PLOTS_DIR / "sweep.png"
    fig.savefig(path)
    plt.close(fig)
    return "img/sweep.png"


def figures(passes: list[Pass], sizes: list[int], moto_seconds: float) -> list[Figure]:
    out: list[Figure] = []
    for n in sizes:
        runs = steady(passes, n)
        wall = statistics.median(p.wall for p in runs)
        cpu = statistics.median(p.cpu for p in runs)
        wait = statistics.median(p.ec2_wait for p in runs)
        calls: Counter[str] = Counter()
        for p in runs:
            calls.update(p.calls)
        describes = calls["DescribeInstances"] / len(runs)
        first = next(p for p in passes if p.pods == n and p.first)
        moto_cpu = statistics.median(p.others["moto"] for p in runs)
        parts = ", ".join(
            f"{name} {statistics.median(p.parts[name] for p in runs):.2f}" for name in runs[0].parts
        )
        label = f"{n:,} pods"
        out += [
            Figure(
                f"sweep wall time, {label} (steady pass)",
                wall,
                "s",
                goal="<= 10 s" if n >= 10000 else "",
                met=wall <= 10 if n >= 10000 else None,
                ratio=wall / 10,
                note=f"{wait:.2f} s of it waiting for EC2 (moto); ratio to the 10 s interval",
            ),
            Figure(
                f"sweep CPU per 1,000 pods, {label} (steady pass)",
                cpu / n * 1000,
                "CPU-s",
                goal="<= 1 CPU-s",
                met=cpu / n * 1000 <= 1,
                note=f"{cpu:.2f} CPU-s in the sweeping process ({parts}); moto spent {moto_cpu:.2f} CPU-s",
            ),
            Figure(
                f"DescribeInstances per 1,000 pods, {label}",
                describes / n * 1000,
                "calls",
                goal="<= 1",
                met=describes / n * 1000 <= 1,
                note=f"all EC2 calls of a pass: {dict(calls)} over {len(runs)} passes",
            ),
            Figure(
                f"sweep wall time, {label} (first pass: every pod's first check written)",
                first.wall,
                "s",
                note=f"{first.cpu:.2f} CPU-s in the sweeping process",
            ),
        ]
    out.append(Figure("moto: launching the instances (set-up, not the sweep)", moto_seconds, "s"))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 pods only, 2 steady passes")
    parser.add_argument("--passes", type=int, help="steady passes per size (default 3; --quick 2)")
    parser.add_argument("--sizes", type=int, nargs="+", help="pod counts (default 1,000 and 10,000)")
    parser.add_argument(
        "--profile", action="store_true", help="cProfile one more steady pass (its main thread)"
    )
    args = parser.parse_args()
    sizes = sorted(args.sizes or ([1000] if args.quick else [1000, 10000]))
    passes = (2 if args.quick else 3) if args.passes is None else args.passes
    if passes < 1:
        parser.error(f"--passes must be at least 1, not {passes}")
    started = time.perf_counter()
    bench = Bench(args.quick)
    try:
        bench.start(sizes[-1])
        for n in sizes:
            bench.seed(n - len(bench.uids))
            bench.run_pass(first=True)
            for _ in range(passes):
                bench.run_pass(first=False)
        if args.profile:
            import cProfile
            import pstats

            profiler = cProfile.Profile()
            profiler.enable()
            bench.run_pass(first=False)
            profiler.disable()
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        if bench.published:
            print(f"!! the sweep published {len(bench.published)} tasks: {bench.published[:5]}")
        plots = [plot(bench.passes, sizes)]
        result = Result(
            name="sweep",
            title="Health sweep: time, CPU and EC2 calls per pass",
            command="PYTHONPATH=. python bench/bench_sweep.py" + (" --quick" if args.quick else ""),
            description=(
                "One vkec2.health.sweep pass run in-process over N Running pods whose instances exist "
                "in moto (behind the AWS-like endpoint, which counts the calls) and whose agents are the "
                "simulator's; wall time and CPU of the sweeping process, steady passes (median of "
                f"{args.passes}) and the first pass."
            ),
            figures=figures(bench.passes, sizes, bench.moto_launch_seconds),
            plots=plots,
            quick=args.quick,
        )
    finally:
        bench.stop()
    result.seconds = time.perf_counter() - started
    write_result(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
