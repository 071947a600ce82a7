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

from bench.common import Figure, percentile
from bench.fleetrun import (
    THREADS,
    Run,
    Servers,
    audit,
    aws_buckets,
    cpu_note,
    cpu_times,
    create,
    delete,
    fleet_overrides,
    has_launch_batching,
    outbox_times,
    running_after_launch,
    start_workers,
    terminate_all,
    wait_for,
)
from bench.limits import limit_rate, serial_baseline
from tests.support.awslike import AwsLike
from tests.support.fleet import FleetHarness
from vkec2.config import AwsSettings
from vkec2.contract import HEALTH_SWEEP, WARM_POOLS
from vkec2.domain.models import Phase

MOTO = AwsLike()
WARM_RATE = 10.0  # pods per second of the warm runs
BATCH_MAX = 100  # aws.launch_batch_max's default, the batch size of the bucket limit with batching


@dataclass
class Options:
    quick: bool
    pods: list[int]  # the pod counts of the throughput runs
    workers: int  # worker processes of the throughput runs
    timeout: float  # longest wait of one create or delete run


def fresh_servers(servers: Servers, opts: Options) -> None:
    """Between two runs of a full scenario: fresh servers (quick mode's few hundred instances do not
    slow moto down; its scenarios share one set)."""
    if not opts.quick:
        servers.fresh()


def batch_size() -> int:
    """Instances per RunInstances the bucket limit assumes: ``aws.launch_batch_max``'s default with
    batching, 1 without."""
    if not has_launch_batching():
        return 1
    field = AwsSettings.model_fields.get("launch_batch_max")
    return int(field.default) if field is not None and isinstance(field.default, int) else BATCH_MAX


def rate_figures(
    label: str, run: Run, limit: float | None, what: str = "create", more: str = ""
) -> list[Figure]:
    """p50 / p99 of a run's per-pod seconds and its throughput (beside the limit when given; ``more``
    goes in the throughput's note)."""
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
            note=f"{run.done}/{run.pods} in {run.wall:.1f} s"
            + ("" if run.complete else " (timed out)")
            + (f"; {more}" if more else ""),
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


def limit(servers: Servers, opts: Options) -> tuple[str, list[Figure], str]:
    """The limit: the serial baseline (setting a) and the buckets' refill (setting b)."""
    pods = min(opts.pods)
    threads = opts.workers * THREADS
    base = serial_baseline(servers.ec2.url, servers.sim_endpoint, pods, threads)
    _MACHINE[threads] = base.rate
    one = serial_baseline(servers.ec2.url, servers.sim_endpoint, min(pods, 5), 1)
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
    """Run the warm-pool task until ``size`` members are Ready (bounded; whether it got there)."""

    def ready() -> bool:
        if len(fleet.store.pool_ready("warm")) >= size:
            return True
        fleet.send(WARM_POOLS)
        return False

    return wait_for(ready, timeout, interval=2.0)


def last_run(fleet: FleetHarness, task: str) -> float:
    """When periodic task ``task`` last finished (its maintenance record), 0 for never."""
    raw = fleet.store.redis.hget(fleet.store.keys.maintenance_last(task), "ts")
    return float(raw) if raw else 0.0


def sweep_pass(fleet: FleetHarness, timeout: float = 60) -> bool:
    """Run one health-sweep pass now and wait (bounded) until it finished."""
    after = time.time()
    fleet.send(HEALTH_SWEEP)
    return wait_for(lambda: last_run(fleet, HEALTH_SWEEP) > after, timeout, interval=0.2)


#: Per-pod create→Running seconds of the runs, for the plots (label -> seconds).
SAMPLES: dict[str, list[float]] = {}
#: EC2 calls per pod measured by the last setting-(a) run (the ``calls`` scenario's figures).
CALLS: list[Figure] = []
SWEEPS = 2


def one_setting(servers: Servers, opts: Options, setting: str, aws: AwsLike, n: int) -> list[Figure]:
    """One fleet, ``n`` pods: a warm pool filled (unthrottled), the warm run at 10 pods/s, then the cold
    run (the pool is empty then: no beat refills it), health-sweep passes, the deletes. Under ``aws``
    from the warm run on; EC2 calls counted at the endpoint for each part."""
    # Warm at the smallest count only: the goal is a latency at 10 pods/s, which the count does not
    # change, and moto takes over 15 minutes to fill a 1,000-member pool. Under buckets the pool fills
    # at the fleet's own 2 RunInstances/s: not at all in quick mode.
    with_warm = n == min(opts.pods) and not (aws.buckets and opts.quick)
    pool = [{"name": "warm", "desired_count": n}] if with_warm else []
    fleet = servers.fleet(fleet_overrides(warm_pools=pool, aws=aws), MOTO)
    start_workers(fleet, opts.workers)
    figures: list[Figure] = []
    counted: dict[str, dict[str, int]] = {}
    if with_warm:
        filled = fill_warm_pool(fleet, n, opts.timeout)
        servers.ec2.configure(aws)
        servers.ec2.reset_counts()
        warm_uids, run = create(fleet, n, opts.timeout, rate=WARM_RATE, prefix="warm")
        counted["warm"] = dict(servers.ec2.calls)
        p50, p99 = percentile(run.seconds, 50), percentile(run.seconds, 99)
        label = f"{setting}, warm at {WARM_RATE:g}/s, {n} pods"
        note = "" if filled else f"pool not full: {len(fleet.store.pool_ready('warm'))}/{n} Ready"
        figures += [
            Figure(f"{label}: create p50", p50, "s", goal="<= 0.3 s", met=p50 <= 0.3, note=note),
            Figure(f"{label}: create p99", p99, "s", goal="<= 1 s", met=p99 <= 1.0, note=f"{run.done}/{n}"),
        ]
        SAMPLES[f"warm ({setting}, {n} pods)"] = run.seconds
    else:
        servers.ec2.configure(aws)
        warm_uids = []
    servers.ec2.reset_counts()
    cpu = cpu_times(servers, fleet)
    uids, run = create(fleet, n, opts.timeout, prefix="cold")
    cpu_used = cpu_note(cpu, cpu_times(servers, fleet), run.wall)
    counted["cold"] = dict(servers.ec2.calls)
    machine = machine_rate(servers, min(opts.pods), opts.workers * THREADS)
    lim = limit_rate(n, machine, aws if aws.buckets else None, batch_size())
    figures += rate_figures(f"{setting}, cold, {n} pods", run, lim, more=cpu_used)
    SAMPLES[f"cold ({setting}, {n} pods)"] = run.seconds
    if not aws.buckets:
        servers.ec2.reset_counts()
        passes = sum(sweep_pass(fleet) for _ in range(SWEEPS))
        counted["sweep"] = dict(servers.ec2.calls)
        counted["sweep"]["passes"] = passes
    servers.ec2.reset_counts()
    gone = delete(fleet, uids + warm_uids, opts.timeout)
    counted["delete"] = dict(servers.ec2.calls)
    figures += rate_figures(f"{setting}, {gone.pods} pods", gone, None, "delete")
    if aws.buckets:
        within = gone.wall if gone.complete else float("inf")
        figures.append(
            Figure(
                f"{setting}: {gone.pods} deletes, all gone",
                gone.wall,
                "s",
                "<= 30 s",
                within <= 30,
                note=f"{gone.done}/{gone.pods}",
            )
        )
    servers.retire(fleet)
    if not aws.buckets and n == min(opts.pods):
        CALLS[:] = calls_figures(counted, n, run.done, len(uids + warm_uids))
    return figures


def calls_figures(counted: dict[str, dict[str, int]], n: int, running: int, deleted: int) -> list[Figure]:
    def per(part: str, pods: int, goal: float) -> Figure:
        calls = {k: v for k, v in counted.get(part, {}).items() if k != "passes"}
        value = sum(calls.values()) / max(1, pods)
        return Figure(
            f"{part} create" if part in ("cold", "warm") else part,
            value,
            "calls/pod",
            f"<= {goal:g}",
            value <= goal,
            note=json.dumps(calls),
        )

    out = [per("cold", n, 2)]
    if "warm" in counted:
        out.append(per("warm", n, 1))
    out.append(per("delete", deleted, 0.1))
    sweep = counted.get("sweep", {})
    passes = max(1, sweep.get("passes", 0))
    # The goal allows one DescribeInstances per started 1,000 Running pods and pass.
    per_k = sweep.get("DescribeInstances", 0) / passes / max(1, math.ceil(running / 1000))
    out.append(
        Figure(
            "health sweep: DescribeInstances per pass per 1,000 pods (started)",
            per_k,
            "calls",
            "<= 1",
            per_k <= 1,
            note=f"{running} Running pods, {passes} passes, all calls {json.dumps(sweep)}",
        )
    )
    return out


def throughput(servers: Servers, opts: Options) -> tuple[str, list[Figure], str]:
    """Cold and warm create→Running and delete→gone, settings (a) and (b), against the limit."""
    figures: list[Figure] = []
    machine_rate(servers, min(opts.pods), opts.workers * THREADS)  # before any fleet runs
    # Quick mode: setting (a) only (its headline runs under the buckets), to stay within 5 minutes.
    settings = [("a: moto", MOTO)] + ([] if opts.quick else [("b: buckets", aws_buckets())])
    runs = [(setting, aws, n) for setting, aws in settings for n in opts.pods]
    for i, (setting, aws, n) in enumerate(runs):
        if i:
            fresh_servers(servers, opts)
        figures += one_setting(servers, opts, setting, aws, n)
    desc = (
        f"create→Running (the record's creation to the pod's Running event, Redis-side) and "
        f"delete→gone (the delete to the Terminated event) of {', '.join(map(str, opts.pods))} pods, "
        f"{opts.workers} worker processes x {THREADS} threads. Warm: a warm pool of as many members, "
        f"filled before the run with the endpoint unthrottled, pods submitted at {WARM_RATE:g}/s; "
        "cold: then as many pods at once, each launching its instance. "
        + f"Warm runs at {min(opts.pods)} pods only"
        + (". Quick mode: setting (a) only. " if opts.quick else ". ")
        + "Setting (a): moto's server and the agent simulator, nothing throttled (the fleet's own EC2 "
        "rate limits off too); (b): AWS's "
        "RunInstances buckets at the endpoint (requests 5 + 2/s, and instances 1,000 + 2/s where the "
        "double models them). The ratio is the fleet's throughput over the limit (see the limit's section)."
    )
    return "Fleet: throughput and latency, cold and warm", figures, desc


def calls(servers: Servers, opts: Options) -> tuple[str, list[Figure], str]:
    """EC2 calls per pod counted at the endpoint: cold and warm create, delete, the health sweep
    (from the throughput scenario's setting-(a) run when it ran, else from its own)."""
    n = min(opts.pods)
    if not CALLS:
        one_setting(servers, opts, "a: moto", MOTO, n)
    desc = (
        f"EC2 requests counted at the endpoint (the double in front of moto, nothing throttled) in the "
        f"setting-(a) run of {n} pods, {opts.workers} workers x {THREADS} threads: the warm creates, "
        f"the cold creates until all Running, {SWEEPS} health-sweep passes over the Running pods, the "
        "deletes of every pod until all Terminated."
    )
    return "Fleet: EC2 calls per pod", list(CALLS), desc


def scaling(servers: Servers, opts: Options) -> tuple[str, list[Figure], str]:
    """The cold run (setting a) with 1, 2 and 4 worker processes (quick: 1 and 4), beside the limit."""
    n = max(opts.pods)
    figures: list[Figure] = []
    # One limit line: the serial baseline with the throughput runs' thread count (the limit scenario's),
    # measured before any fleet of this scenario runs.
    machine = machine_rate(servers, min(opts.pods), opts.workers * THREADS)
    counts = (1, 4) if opts.quick else (1, 2, 4)
    for workers in counts:
        if workers > 1:
            fresh_servers(servers, opts)
        fleet = servers.fleet(fleet_overrides(aws=MOTO), MOTO)
        start_workers(fleet, workers)
        cpu = cpu_times(servers, fleet)
        _, run = create(fleet, n, opts.timeout, prefix=f"scale{workers}")
        cpu_used = cpu_note(cpu, cpu_times(servers, fleet), run.wall)
        label = f"{workers} worker(s) x {THREADS} threads, {n} pods"
        figures += rate_figures(label, run, machine, more=cpu_used)
        servers.retire(fleet)
        terminate_all(fleet)  # deletes are measured elsewhere
    desc = (
        f"The cold {n}-pod run of setting (a) with {', '.join(map(str, counts))} worker processes of "
        f"{THREADS} threads each (Celery's threads pool); the limit line is the serial baseline of the "
        f"limit section ({opts.workers * THREADS} pods at a time), the same for every worker count. The "
        "machine has 2 cores shared by Redis, moto, the simulator and the workers."
    )
    return "Fleet: worker scaling", figures, desc


def headline(servers: Servers, opts: Options) -> tuple[str, list[Figure], str]:
    """N pods under both AWS buckets with worker SIGKILLs; then batching off, capped."""
    n = 1000 if not opts.quick else max(opts.pods)
    cap = 120.0 if not opts.quick else 30.0
    figures: list[Figure] = []
    if not has_launch_batching():
        runs = [("one RunInstances per pod (no batching in this build)", False, cap)]
    elif opts.quick:  # without the capped batching-off run, to keep quick mode within 5 minutes
        runs = [("batching on", True, opts.timeout)]
    else:
        runs = [("batching on", True, opts.timeout), ("batching off", False, cap)]
    for i, (label, batching, timeout) in enumerate(runs):
        if i:
            fresh_servers(servers, opts)
        aws = aws_buckets()
        fleet = servers.fleet(fleet_overrides(batching, aws=aws), aws)
        fleet.start_beat()
        start_workers(fleet, 4)

        killed: list[str] = []
        began = time.time()

        def kill(
            uids: list[str],
            fleet: FleetHarness = fleet,
            timeout: float = timeout,
            killed: list[str] = killed,
            began: float = began,
        ) -> None:
            def in_flight() -> bool:
                return len(outbox_times(fleet, Phase.RUNNING)) >= len(uids) // 4 or any(
                    fleet.store.get(u) is not None and fleet.record(u).instance_id for u in uids[-10:]
                )

            wait_for(in_flight, min(60.0, timeout / 2), interval=0.5)
            victims = [w for w in fleet.workers if "worker" in w.name][:2]
            for victim in victims:
                victim.kill(signal.SIGKILL)
            killed.append(f"{len(victims)} workers SIGKILLed at {time.time() - began:.1f} s")
            start_workers(fleet, len(victims))

        cpu = cpu_times(servers, fleet)
        uids, run = create(fleet, n, timeout, prefix="head", during=kill)
        cpu_used = cpu_note(cpu, cpu_times(servers, fleet), run.wall)
        p50 = percentile(run.seconds, 50)
        after_launch = running_after_launch(fleet, servers.ec2, run.reached)
        late = max(after_launch) if after_launch else float("nan")
        gone = delete(fleet, uids, opts.timeout)
        found = audit(fleet, servers.ec2, uids)
        tag = f"{label}, {n} pods"
        # Not all Running within the cap: the time until all Running is unknown (shown as infinite).
        all_running = run.wall if run.complete else float("inf")
        reached = f"{run.done}/{n} Running" + ("" if run.complete else f" after the {timeout:.0f} s cap")
        figures += [
            Figure(
                f"{tag}: all Running",
                all_running,
                "s",
                "< 120 s",
                all_running < 120,
                note="; ".join([reached, *killed]),
            ),
            Figure(
                f"{tag}: rate",
                run.rate,
                "pods/s",
                note=f"{run.done} pods in {run.wall:.1f} s; {cpu_used} (killed workers not counted)",
            ),
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
        "of the cluster, or launched ones nobody owns, after every pod was deleted. Then (not in quick "
        f"mode) the same without batching, capped at {cap:.0f} s: the ~2 pods/s ceiling of one "
        "RunInstances per pod."
    )
    return "Fleet: pods under both AWS buckets with worker kills", figures, desc


SCENARIOS = {
    "limit": limit,
    "throughput": throughput,
    "calls": calls,
    "scaling": scaling,
    "headline": headline,
}
