"""Benchmark: resident memory of the producer with 10,000 pods on its node, and of a worker.

Producer: starts its own Redis and the Kubernetes API double (:mod:`tests.k8s.apiserver`, in this
process) and runs the real ``vkec2 producer`` for one node against it, as the producer tests do. Its
RSS is read once it has registered and watches (no pods), then N pods bound to its node are created
in the double directly (not one HTTP request each) and its RSS is read again once every pod has its
record in Redis and the RSS has settled (no change over 1 % for 5 s; 2 s in quick mode). No worker
runs, so the pods stay Pending and their create messages wait in the broker: what is measured is
the producer's own state for N pods (its informer cache, its records, its status bookkeeping), not
the fleet's.

Worker: one ``celery worker`` (threads pool, 4 threads) of a fleet as deployed (launches batched)
behind the EC2 double, moto's server and the agent simulator (:class:`bench.fleetrun.Servers`): its
RSS idle (ready, nothing run) and after M pods were created and reached Running (default 100;
``--quick`` 20). ``--quick``: 1,000 producer pods.
Run: ``PYTHONPATH=. python bench/bench_producer_memory.py [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from bench.common import Figure, Result, write_result
from bench.fleetrun import Servers, fleet_overrides, start_workers
from tests.k8s.apiserver import FakeKubeApiServer
from tests.support.awslike import AwsLike
from tests.support.fleet import NODE, FleetHarness, example_pod
from tests.support.services import wait_until
from vkec2.cli.procs import ManagedProcess, start_redis
from vkec2.domain.models import Phase

MIB = 2**20
NODE_IP = "10.20.30.40"
GOAL_MB = 150
#: Seconds an RSS must stay within 1 % to count as settled (quick mode: shorter).
SETTLE, SETTLE_QUICK = 5.0, 2.0


def rss_mib(pid: int) -> float:
    """RSS of a process and its children, MiB."""
    proc = psutil.Process(pid)
    return float(sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])) / MIB


def settled_rss(pid: int, window: float, timeout: float = 120.0) -> float:
    """The RSS once it has changed by less than 1 % over ``window`` seconds."""
    deadline = time.monotonic() + timeout
    samples: list[tuple[float, float]] = []
    while True:
        now, rss = time.monotonic(), rss_mib(pid)
        samples.append((now, rss))
        recent = [r for t, r in samples if now - t <= window]
        if now - samples[0][0] >= window and max(recent) - min(recent) <= 0.01 * max(recent):
            return rss
        if now > deadline:
            return rss
        time.sleep(0.5)


def bound_pod(i: int) -> dict[str, Any]:
    """A pod as the scheduler leaves it on the producer's node."""
    pod = example_pod(f"mem-{i}")
    del pod["metadata"]["uid"]  # the API double assigns it
    pod["spec"]["tolerations"] = [
        {"key": "virtual-kubelet.io/provider", "operator": "Equal", "value": "vkec2", "effect": "NoSchedule"}
    ]
    return pod


def producer_memory(tmp: Path, redis_url: str, pods: int, window: float) -> tuple[float, float, float]:
    """(RSS with no pods, RSS with ``pods`` pods, seconds until every pod had its record)."""
    api = FakeKubeApiServer(history_size=2 * pods + 100, bookmark_interval=600).start()
    fleet = FleetHarness(tmp, f"{redis_url}/1", "http://127.0.0.1:9", "127.0.0.1:9")
    argv = fleet.producer_argv(
        NODE, "--no-kubelet", "--kube-host", api.url, "--node-ip", NODE_IP, "--log-level", "WARNING"
    )
    proc = ManagedProcess("producer", argv, env=fleet.env()).start()
    try:

        def registered() -> bool:
            if not proc.alive():
                raise RuntimeError(f"producer exited:\n{proc.output()[-4000:]}")
            return api.get("nodes", NODE) is not None and api.open_watches("pods") > 0

        wait_until(registered, 300, "the producer to register and watch", interval=0.2)
        idle = settled_rss(proc.pid, window)
        print(f"producer: RSS {idle:.1f} MiB registered and watching, no pods")
        started = time.perf_counter()
        for i in range(pods):
            api.create("pods", bound_pod(i))
        print(f"API double: {pods} pods created in {time.perf_counter() - started:.1f}s")

        def recorded() -> bool:
            if not proc.alive():
                raise RuntimeError(f"producer exited:\n{proc.output()[-4000:]}")
            return len(fleet.store.uids(NODE)) >= pods

        wait_until(recorded, 600, f"the producer to record {pods} pods", interval=1)
        synced = time.perf_counter() - started
        full = settled_rss(proc.pid, window)
        print(
            f"producer: every pod recorded after {synced:.1f}s; RSS {full:.1f} MiB settled with {pods} pods"
        )
        return idle, full, synced
    finally:
        proc.stop()
        fleet.stop()
        api.stop()


def worker_memory(pods: int, window: float) -> tuple[float, float]:
    """(RSS of an idle worker, RSS after ``pods`` creates reached Running)."""
    servers = Servers().start()
    try:
        # As deployed: launches batched behind the EC2 double (moto alone launches MinCount).
        fleet = servers.fleet(fleet_overrides(), AwsLike())
        start_workers(fleet, 1, threads=4)
        worker = fleet.workers[0]
        idle = settled_rss(worker.pid, window)
        print(f"worker: RSS {idle:.1f} MiB idle (ready, nothing run)")
        started = time.perf_counter()
        uids = [fleet.submit(example_pod(f"w-{i}")) for i in range(pods)]
        fleet.wait_phase(uids, [Phase.RUNNING], timeout=600)
        busy = settled_rss(worker.pid, window)
        print(f"worker: {pods} pods Running after {time.perf_counter() - started:.1f}s; RSS {busy:.1f} MiB")
        return idle, busy
    finally:
        servers.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 producer pods, 20 worker pods")
    parser.add_argument("--pods", type=int, help="producer pods (default 10,000; --quick 1,000)")
    parser.add_argument("--no-worker", action="store_true", help="measure the producer only")
    parser.add_argument("--worker-pods", type=int, help="worker creates (default 100; --quick 20)")
    args = parser.parse_args()
    pods = args.pods or (1000 if args.quick else 10000)
    worker_pods = args.worker_pods or (20 if args.quick else 100)
    window = SETTLE_QUICK if args.quick else SETTLE
    os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"})
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="vkec2-bench-mem-"))
    redis, redis_url = start_redis()
    try:
        idle, full, synced = producer_memory(tmp, redis_url, pods, window)
        if args.no_worker:
            return 0
        worker_idle, worker_busy = worker_memory(worker_pods, window)
    finally:
        redis.stop()
    per_pod_kib = (full - idle) * 1024 / pods
    figures = [
        Figure(
            f"producer RSS with {pods:,} pods on its node",
            full,
            "MiB",
            goal=f"<= {GOAL_MB} MB ({GOAL_MB * 1e6 / MIB:.1f} MiB)" if pods >= 10000 else "",
            met=full * MIB / 1e6 <= GOAL_MB if pods >= 10000 else None,
            note=f"{idle:.1f} MiB with no pods; {per_pod_kib:.1f} KiB per pod; recorded in {synced:.0f} s",
        ),
        Figure("producer RSS per pod", per_pod_kib, "KiB"),
        Figure("worker RSS, idle", worker_idle, "MiB", note="threads pool, 4 threads, ready, nothing run"),
        Figure(
            f"worker RSS after {worker_pods} pods created",
            worker_busy,
            "MiB",
            note="the one worker of a fleet as deployed (EC2 double, agent simulator), pods Running",
        ),
    ]
    result = Result(
        name="producer_memory",
        title="Memory: producer with many pods, worker",
        command="PYTHONPATH=. python bench/bench_producer_memory.py" + (" --quick" if args.quick else ""),
        description=(
            "Producer RSS registered with no pods, then settled with N pods bound to its node in the "
            "Kubernetes API double (no workers: the pods stay Pending); a worker's RSS idle and after "
            "M creates reached Running."
        ),
        figures=figures,
        quick=args.quick,
        seconds=time.perf_counter() - started,
    )
    write_result(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
