"""The scenarios of the fleet benchmark, one function each, every one returning a :class:`Result`.

Each scenario starts fleets on the shared :class:`~bench.fleetrun.Servers` (a private Redis, moto,
the agent simulator, the AWS-like double), measures, retires its fleets and returns its figures
beside their goals. ``bench/bench_fleet.py`` is the command line; docs/benchmarks.md shows the
results. Setting (a) is moto and the simulator with nothing throttled; setting (b) adds AWS's
RunInstances buckets at the endpoint (:func:`~bench.fleetrun.aws_buckets`).
"""

from __future__ import annotations

import json
import math
import signal
import time
from dataclasses import dataclass
from typing import Any

from bench.common import Figure, percentile
from bench.fleetrun import (
    Run,
    Servers,
    audit,
    aws_buckets,
    create,
    delete,
    has_launch_batching,
    outbox_times,
    running_after_launch,
    wait_for,
)
from bench.limits import limit_rate, serial_baseline
from tests.support.awslike import AwsLike
from tests.support.fleet import FleetHarness
from vkec2.contract import HEALTH_SWEEP, WARM_POOLS
from vkec2.domain.models import Phase

MOTO = AwsLike()
THREADS = 8  # worker threads per process (Celery's threads pool)
WARM_RATE = 10.0  # pods per second of the warm runs
BATCH_MAX = 100  # aws.launch_batch_max's default, the batch size of the bucket limit with batching


@dataclass
class Options:
    quick: bool
    pods: list[int]  # the pod counts of the throughput runs
    workers: int  # worker processes of the throughput runs
    timeout: float  # longest wait of one create or delete run


def fleet_overrides(batching: bool = True, **more: Any) -> dict[str, Any]:
    """The fleet's settings for a run: lost work back quickly; batching off when asked and supported."""
    out: dict[str, Any] = {"celery": {"visibility_timeout_seconds": 600}, **more}
    if not batching and has_launch_batching():
        out["aws"] = {**out.get("aws", {}), "launch_batch_window_seconds": 0}
    return out


def batch_size() -> int:
    return BATCH_MAX if has_launch_batching() else 1


def rate_figures(label: str, run: Run, limit: float | None, what: str = "create") -> list[Figure]:
    """p50 / p99 of a run's per-pod seconds and its throughput (beside the limit when given)."""
    ratio = run.rate / limit if limit else None
    out = [
        Figure(f"{label}: {what} p50", percentile(run.seconds, 50), "s"),
        Figure(f"{label}: {what} p99", percentile(run.seconds, 99), "s"),
        Figure(
            f"{label}: {what} throughput",
            run.rate,
            "pods/s",
            goal=">= 0.8 of the limit" if limit else "",
            met=(ratio >= 0.8) if ratio is not None else None,
            ratio=ratio,
            note=f"{run.done}/{run.pods} in {run.wall:.1f} s" + ("" if run.complete else " (timed out)"),
        ),
    ]
    if limit:
        out.append(Figure(f"{label}: limit", limit, "pods/s"))
    return out


_MACHINE: dict[int, float] = {}


def machine_rate(servers: Servers, pods: int, threads: int) -> float:
    """The serial baseline's pods per second (measured once per thread count and run)."""
    if threads not in _MACHINE:
        servers.ec2.configure(MOTO)
        base = serial_baseline(servers.ec2.url, servers.sim_endpoint, pods, threads)
        _MACHINE[threads] = base.rate
    return _MACHINE[threads]


def start_workers(fleet: FleetHarness, workers: int, threads: int = THREADS) -> None:
    for _ in range(workers):
        fleet.start_worker(concurrency=threads)


def limit(servers: Servers, opts: Options) -> tuple[str, list[Figure], str]:
    """The limit: the serial baseline (setting a) and the buckets' refill (setting b)."""
    pods = min(opts.pods)
    threads = opts.workers * THREADS
    base = serial_baseline(servers.ec2.url, servers.sim_endpoint, pods, threads)
    _MACHINE[threads] = base.rate
    one = serial_baseline(servers.ec2.url, servers.sim_endpoint, min(pods, 10), 1)
    aws = aws_buckets()
    figures = [
        Figure(
            f"serial baseline, {threads} pods at a time",
            base.rate,
            "pods/s",
            note=f"{base.done}/{pods} pods in {base.seconds:.1f} s: the machine's limit (setting a)",
        ),
        Figure("serial baseline: one pod's calls, p50", percentile(base.per_pod, 50), "s"),
        Figure("serial baseline, one pod at a time", one.rate, "pods/s", note=f"{one.done} pods"),
    ]
    for n in sorted({*opts.pods, 1000}):
        figures.append(
            Figure(
                f"buckets: limit for {n} pods, one RunInstances per pod",
                limit_rate(n, base.rate, aws, 1),
                "pods/s",
                note="burst 5 then 2/s, the machine's limit when lower",
            )
        )
        figures.append(
            Figure(
                f"buckets: limit for {n} pods in batches of {BATCH_MAX}",
                limit_rate(n, base.rate, aws, BATCH_MAX),
                "pods/s",
                note="min of the request and instance buckets and the machine",
            )
        )
    desc = (
        "The limit the fleet is compared with. Setting (a): a serial baseline makes only the calls a pod "
        "needs (RunInstances, DescribeInstances until running, the agent's health check, "
        "LaunchApplication, the status until Running) with nothing of the fleet around them, as many "
        "pods at a time as the fleet has worker threads, against the same endpoint and simulator. "
        "Setting (b): the rate AWS's RunInstances buckets allow (bench/limits.py "
        "refill_limited_seconds), or the machine's when lower."
    )
    return "Fleet: the limit (serial baseline, bucket refill)", figures, desc


def fill_warm_pool(fleet: FleetHarness, size: int, timeout: float) -> bool:
    """Run the warm-pool task until ``size`` members are Ready (the endpoint unthrottled meanwhile)."""

    def ready() -> bool:
        if len(fleet.store.pool_ready("warm")) >= size:
            return True
        fleet.send(WARM_POOLS)
        return False

    return wait_for(ready, timeout, interval=2.0)


def throughput(servers: Servers, opts: Options) -> tuple[str, list[Figure], str]:
    """Cold and warm create→Running and delete→gone, settings (a) and (b), against the limit."""
    threads = opts.workers * THREADS
    machine = machine_rate(servers, min(opts.pods), threads)
    figures: list[Figure] = []
    for setting, aws in (("a: moto", MOTO), ("b: buckets", aws_buckets())):
        for n in opts.pods:
            fleet = servers.fleet(fleet_overrides(), aws)
            start_workers(fleet, opts.workers)
            uids, run = create(fleet, n, opts.timeout, prefix="cold")
            lim = limit_rate(n, machine, aws if aws.buckets else None, batch_size())
            SAMPLES[f"cold ({setting}, {n} pods)"] = run.seconds
            figures += rate_figures(f"{setting}, cold, {n} pods", run, lim)
            gone = delete(fleet, uids, opts.timeout)
            within = gone.wall if gone.complete else float("inf")
            figures += rate_figures(f"{setting}, {n} pods", gone, None, "delete")
            if aws.buckets:
                figures.append(
                    Figure(
                        f"{setting}: {n} deletes, all gone",
                        gone.wall,
                        "s",
                        goal="<= 30 s",
                        met=within <= 30,
                        note=f"{gone.done}/{n}",
                    )
                )
            servers.retire(fleet)
            figures += warm(servers, opts, setting, aws, n)
    desc = (
        f"create→Running (the record's creation to the pod's Running event, Redis-side) and "
        f"delete→gone (the delete to the Terminated event) of {', '.join(map(str, opts.pods))} pods, "
        f"{opts.workers} worker processes x {THREADS} threads. Cold: every pod launches its instance; "
        f"warm: a warm pool of as many members filled before the run, pods submitted at {WARM_RATE:g}/s. "
        "Setting (a): moto's server and the agent simulator, nothing throttled; (b): AWS's RunInstances "
        "buckets at the endpoint (requests 5 + 2/s, and instances 1,000 + 2/s where the double models "
        "them). The ratio is the fleet's throughput over the limit (see the limit's section)."
    )
    return "Fleet: throughput and latency, cold and warm", figures, desc


def warm(servers: Servers, opts: Options, setting: str, aws: AwsLike, n: int) -> list[Figure]:
    fleet = servers.fleet(fleet_overrides(warm_pools=[{"name": "warm", "desired_count": n}]), MOTO)
    start_workers(fleet, opts.workers)
    filled = fill_warm_pool(fleet, n, opts.timeout)
    servers.ec2.configure(aws)
    servers.ec2.reset_counts()
    uids, run = create(fleet, n, opts.timeout, rate=WARM_RATE, prefix="warm")
    calls = sum(servers.ec2.calls.values())
    p50, p99 = percentile(run.seconds, 50), percentile(run.seconds, 99)
    label = f"{setting}, warm at {WARM_RATE:g}/s, {n} pods"
    note = "" if filled else f"pool not full: {len(fleet.store.pool_ready('warm'))}/{n} Ready"
    out = [
        Figure(f"{label}: create p50", p50, "s", goal="<= 0.3 s", met=p50 <= 0.3, note=note),
        Figure(f"{label}: create p99", p99, "s", goal="<= 1 s", met=p99 <= 1.0),
        Figure(f"{label}: EC2 calls per pod", calls / n, "calls", note=json.dumps(dict(servers.ec2.calls))),
    ]
    SAMPLES[f"warm ({setting}, {n} pods)"] = run.seconds
    delete(fleet, uids, opts.timeout)
    servers.retire(fleet)
    return out


#: Per-pod create→Running seconds of the last runs, for the plots (label -> seconds).
SAMPLES: dict[str, list[float]] = {}


def last_run(fleet: FleetHarness, task: str) -> float:
    """When periodic task ``task`` last finished (its maintenance record), 0 for never."""
    raw = fleet.store.redis.hget(fleet.store.keys.maintenance_last(task), "ts")
    return float(raw) if raw else 0.0


def sweep_pass(fleet: FleetHarness, timeout: float = 60) -> bool:
    """Run one health-sweep pass now and wait (bounded) until it finished."""
    after = time.time()
    fleet.send(HEALTH_SWEEP)
    return wait_for(lambda: last_run(fleet, HEALTH_SWEEP) > after, timeout, interval=0.2)


def calls(servers: Servers, opts: Options) -> tuple[str, list[Figure], str]:
    """EC2 calls per pod counted at the endpoint: cold create, warm create, delete, the health sweep."""
    n = min(opts.pods)
    fleet = servers.fleet(fleet_overrides(), MOTO)
    start_workers(fleet, opts.workers)
    servers.ec2.reset_counts()
    uids, run = create(fleet, n, opts.timeout, prefix="calls")
    cold = dict(servers.ec2.calls)
    servers.ec2.reset_counts()
    sweeps = 2
    for _ in range(sweeps):
        sweep_pass(fleet)
    sweep = dict(servers.ec2.calls)
    servers.ec2.reset_counts()
    gone = delete(fleet, uids, opts.timeout)
    deletes = dict(servers.ec2.calls)
    servers.retire(fleet)
    # The goal allows one DescribeInstances per started 1,000 Running pods and pass.
    per_k = sweep.get("DescribeInstances", 0) / sweeps / max(1, math.ceil(run.done / 1000))
    figures = [
        Figure(
            "cold create",
            sum(cold.values()) / n,
            "calls/pod",
            "<= 2",
            sum(cold.values()) / n <= 2,
            note=json.dumps(cold),
        ),
        Figure(
            "delete",
            sum(deletes.values()) / n,
            "calls/pod",
            "<= 0.1",
            sum(deletes.values()) / n <= 0.1,
            note=json.dumps(deletes) + ("" if gone.complete else " (timed out)"),
        ),
        Figure(
            "health sweep: DescribeInstances per pass per 1,000 pods (started)",
            per_k,
            "calls",
            "<= 1",
            per_k <= 1,
            note=f"{run.done} Running pods, {sweeps} passes, all calls {json.dumps(sweep)}",
        ),
    ]
    desc = (
        f"EC2 requests counted at the endpoint (the double in front of moto, nothing throttled) for "
        f"{n} pods, {opts.workers} workers x {THREADS} threads: the creates until all Running, "
        f"{sweeps} health-sweep passes over the Running pods, the deletes until all Terminated. The warm "
        "figure (goal <= 1) is in the throughput section."
    )
    return "Fleet: EC2 calls per pod", figures, desc


def scaling(servers: Servers, opts: Options) -> tuple[str, list[Figure], str]:
    """The cold run (setting a) with 1, 2 and 4 worker processes, beside the limit."""
    n = max(opts.pods)
    figures: list[Figure] = []
    for workers in (1, 2, 4):
        fleet = servers.fleet(fleet_overrides(), MOTO)
        start_workers(fleet, workers)
        machine = machine_rate(servers, min(opts.pods), workers * THREADS)
        uids, run = create(fleet, n, opts.timeout, prefix=f"scale{workers}")
        figures += rate_figures(f"{workers} worker(s) x {THREADS} threads, {n} pods", run, machine)
        delete(fleet, uids, opts.timeout)
        servers.retire(fleet)
    desc = (
        f"The cold {n}-pod run of setting (a) with 1, 2 and 4 worker processes of {THREADS} threads "
        "each (Celery's threads pool); the limit is the serial baseline with as many pods at a time as "
        "worker threads. The machine has 2 cores shared by Redis, moto, the simulator and the workers."
    )
    return "Fleet: worker scaling", figures, desc


def headline(servers: Servers, opts: Options) -> tuple[str, list[Figure], str]:
    """N pods under both AWS buckets with worker SIGKILLs; then batching off, capped."""
    n = 1000 if not opts.quick else max(opts.pods)
    cap = 120.0 if not opts.quick else 30.0
    figures: list[Figure] = []
    runs = [("batching on", True, opts.timeout)]
    if has_launch_batching():
        runs.append(("batching off", False, cap))
    else:
        runs = [("one RunInstances per pod (no batching in this build)", False, cap)]
    for label, batching, timeout in runs:
        aws = aws_buckets()
        fleet = servers.fleet(fleet_overrides(batching), aws)
        fleet.start_beat()
        start_workers(fleet, 4)

        def kill(uids: list[str], fleet: FleetHarness = fleet, timeout: float = timeout) -> None:
            def in_flight() -> bool:
                return len(outbox_times(fleet, Phase.RUNNING)) >= len(uids) // 4 or any(
                    fleet.store.get(u) is not None and fleet.record(u).instance_id for u in uids[-10:]
                )

            wait_for(in_flight, min(60.0, timeout / 2), interval=0.5)
            victims = [w for w in fleet.workers if "worker" in w.name][:2]
            for victim in victims:
                victim.kill(signal.SIGKILL)
            start_workers(fleet, len(victims))

        uids, run = create(fleet, n, timeout, prefix="head", during=kill)
        p50 = percentile(run.seconds, 50)
        after_launch = running_after_launch(fleet, servers.ec2, run.reached)
        late = max(after_launch) if after_launch else float("nan")
        gone = delete(fleet, uids, opts.timeout)
        found = audit(fleet, servers.ec2, uids)
        tag = f"{label}, {n} pods"
        all_running = run.wall if run.complete else float("inf")
        figures += [
            Figure(
                f"{tag}: all Running",
                run.wall,
                "s",
                "< 120 s",
                all_running < 120,
                note=f"{run.done}/{n} Running" + ("" if run.complete else f" after the {timeout:.0f} s cap"),
            ),
            Figure(f"{tag}: rate", run.rate, "pods/s"),
            Figure(
                f"{tag}: create p50 / time until all Running",
                p50 / run.wall if run.wall else float("nan"),
                "",
                "<= 0.5",
                p50 / run.wall <= 0.5 if run.wall else None,
                note=f"p50 {p50:.1f} s",
            ),
            Figure(
                f"{tag}: Running minus RunInstances, max",
                late,
                "s",
                "<= 15 s",
                late <= 15,
                note=f"p50 {percentile(after_launch, 50):.1f} s over {len(after_launch)} pods",
            ),
            Figure(
                f"{tag}: duplicates",
                found.duplicates,
                "pods",
                "0",
                found.duplicates == 0,
                note=f"{found.launched} instances launched, {found.batches} launch batches",
            ),
            Figure(
                f"{tag}: leaks after delete",
                found.live + found.orphans,
                "instances",
                "0",
                found.live + found.orphans == 0,
                note=f"deletes {gone.done}/{n} in {gone.wall:.1f} s",
            ),
        ]
        servers.retire(fleet)
    desc = (
        f"{n} pods submitted at once under AWS's RunInstances request bucket (5, 2/s) and, where the "
        "double models it, its instance bucket (1,000, 2/s); 4 workers x 8 threads and beat, 2 workers "
        "SIGKILLed by PID once a quarter of the pods are Running (replaced at once). Duplicates: a pod "
        "with two live instances, or a recorded instance tagged for another pod; leaks: live instances "
        "of the cluster, or launched ones nobody owns, after every pod was deleted. Then the same "
        f"without batching, capped at {cap:.0f} s: the ~2 pods/s ceiling of one RunInstances per pod."
    )
    return "Fleet: pods under both AWS buckets with worker kills", figures, desc


SCENARIOS = {
    "limit": limit,
    "throughput": throughput,
    "calls": calls,
    "scaling": scaling,
    "headline": headline,
}
