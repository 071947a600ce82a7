"""Benchmark: how fast the agent simulator answers health checks for 5,000 virtual instances, and its memory.

Starts its own moto server and simulator on free loopback ports, launches the instances in a few
RunInstances calls, then asks each virtual agent for its health (sequentially, then with a thread
pool), launches a simulated pod on every one, and prints the time per call and the simulator's
resident memory (``bench/results/simulator.json``). It prints numbers, not pass/fail. Run:
``PYTHONPATH=. python bench/bench_simulator.py [--quick]`` (quick: 500 instances).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.common import Figure, Result, write_result
from vkec2.agent_client.client import AgentClient
from vkec2.cli.procs import ManagedProcess, start_agent_sim, start_moto
from vkec2.config import AgentConnection
from vkec2.domain.agents import AgentTarget

REGION = "us-west-2"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, help="virtual instances (5,000; quick: 500)")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="500 instances (make bench-quick)")
    args = parser.parse_args()
    args.instances = args.instances or (500 if args.quick else 5000)
    began = time.monotonic()
    figures: list[Figure] = []
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }
    os.environ.update(env)
    import boto3

    moto, url = start_moto()
    sim: ManagedProcess | None = None
    try:
        ec2 = boto3.client("ec2", endpoint_url=url, region_name=REGION)
        started = time.perf_counter()
        ids: list[str] = []
        while len(ids) < args.instances:
            n = min(1000, args.instances - len(ids))
            resp = ec2.run_instances(
                ImageId="ami-12345678", MinCount=n, MaxCount=n, InstanceType="mac2.metal"
            )
            ids += [i["InstanceId"] for i in resp["Instances"]]
        print(f"moto: {len(ids)} instances launched in {time.perf_counter() - started:.1f}s")
        figures.append(
            Figure("moto: instances launched", time.perf_counter() - started, "s", note=f"{len(ids)}")
        )

        started = time.perf_counter()
        sim, endpoint = start_agent_sim(
            url,
            region=REGION,
            extra_args=["--refresh-interval", "600", "--log-level", "WARNING"],
            timeout=300,
            env=env,
        )
        print(
            f"simulator: listening after {time.perf_counter() - started:.1f}s "
            f"(first inventory of {len(ids)} instances included); RSS {rss_mib(sim.pid):.1f} MiB"
        )
        figures.append(
            Figure("simulator: listening (first inventory included)", time.perf_counter() - started, "s")
        )

        conn = AgentConnection(endpoint=f"static:{endpoint}", call_timeout_seconds=30)
        client = AgentClient(conn)
        targets = [AgentTarget(endpoint, iid) for iid in ids]

        timings = []
        started = time.perf_counter()
        for t in targets:
            t0 = time.perf_counter()
            ok = client.serving(t)
            timings.append(time.perf_counter() - t0)
            if not ok:
                print(f"!! {t.instance_id} not serving")
        total = time.perf_counter() - started
        timings.sort()
        print(
            f"health, sequential: {len(targets)} checks in {total:.2f}s = "
            f"{total / len(targets) * 1000:.3f} ms/check (median {statistics.median(timings) * 1000:.3f} ms, "
            f"p99 {timings[int(len(timings) * 0.99)] * 1000:.3f} ms)"
        )
        figures.append(
            Figure(
                "health check, sequential",
                total / len(targets) * 1000,
                "ms/check",
                note=f"median {statistics.median(timings) * 1000:.3f} ms, "
                f"p99 {timings[int(len(timings) * 0.99)] * 1000:.3f} ms",
            )
        )

        started = time.perf_counter()
        with ThreadPoolExecutor(args.threads) as pool:
            served = sum(pool.map(client.serving, targets))
        total = time.perf_counter() - started
        print(
            f"health, {args.threads} threads: {served}/{len(targets)} serving in {total:.2f}s = "
            f"{total / len(targets) * 1000:.3f} ms/check"
        )
        figures.append(
            Figure(
                f"health check, {args.threads} threads",
                total / len(targets) * 1000,
                "ms/check",
                note=f"{served}/{len(targets)} serving",
            )
        )
        print(f"simulator RSS with {len(targets)} virtual agents: {rss_mib(sim.pid):.1f} MiB")
        figures.append(Figure(f"simulator RSS, {len(targets)} virtual agents", rss_mib(sim.pid), "MiB"))

        def launch(t: AgentTarget) -> None:
            pod = {
                "metadata": {"name": "bench", "namespace": "default", "uid": t.instance_id},
                "spec": {"containers": [{"name": "main", "command": ["sleep", "infinity"]}]},
            }
            client.launch(t, pod)

        started = time.perf_counter()
        with ThreadPoolExecutor(args.threads) as pool:
            list(pool.map(launch, targets))
        total = time.perf_counter() - started
        print(
            f"launch, {args.threads} threads: {len(targets)} pods in {total:.2f}s = "
            f"{total / len(targets) * 1000:.3f} ms/launch"
        )
        figures.append(
            Figure(f"LaunchApplication, {args.threads} threads", total / len(targets) * 1000, "ms/launch")
        )
        started = time.perf_counter()
        phases = [client.status(t).phase for t in targets]
        total = time.perf_counter() - started
        print(
            f"status, sequential: {phases.count('Running')}/{len(targets)} Running, "
            f"{total / len(targets) * 1000:.3f} ms/status"
        )
        figures.append(
            Figure(
                "CheckApplicationHealth, sequential",
                total / len(targets) * 1000,
                "ms/status",
                note=f"{phases.count('Running')}/{len(targets)} Running",
            )
        )
        print(f"simulator RSS with {len(targets)} running simulated pods: {rss_mib(sim.pid):.1f} MiB")
        figures.append(
            Figure(f"simulator RSS, {len(targets)} running simulated pods", rss_mib(sim.pid), "MiB")
        )
        client.close()
        write_result(
            Result(
                name="simulator",
                title=f"Agent simulator: {len(targets):,} virtual instances",
                command="PYTHONPATH=. python bench/bench_simulator.py" + (" --quick" if args.quick else ""),
                description="Starts its own moto server and `vkec2 agent-sim` on free loopback ports, "
                f"launches {len(targets):,} instances in moto, then asks every virtual agent for its health "
                f"(sequentially, then {args.threads} threads), launches a simulated pod on each and reads "
                "each status: time per call and the simulator's RSS. Launching the instances in moto and "
                "the simulator's first inventory are not the simulator's own per-call cost.",
                figures=figures,
                quick=args.quick,
                seconds=round(time.monotonic() - began, 1),
            )
        )
    finally:
        if sim is not None:
            sim.stop()
        moto.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
