"""Benchmark: the create steps: Redis round trips per step, their profile, and warm create→Running latency.

Starts a private ``redis-server``, moto's server and the agent simulator on free loopback ports.

1. **Round trips per step** (in this process): a warm pool of ``--steps-pods`` members (default 5)
   is filled, then twice as many pods (the first half claims the members, the second launches
   cold) are carried from Pending to Running by calling the create task's function here, one
   step after the other (each after its countdown), while :class:`bench.roundtrips.RoundTrips`
   counts every Redis round trip of the step (the store's and the broker's publish of the next
   step) and cProfile records where the step's time goes. Prints the round trips of each kind of
   step (phase before → after) and the top functions by cumulative and own time.
2. **Warm create latency** (worker processes): a warm pool of ``--pods`` instances (``--quick``:
   20, else 100) is filled, pods are submitted at ``--rate`` pods/s (10) and each one's
   create→Running is measured from its record's creation to its Running event in the status outbox
   (Redis-side times; the outbox is not consumed). Goal (issue 16): p50 <= 300 ms, p99 <= 1 s.

Run: ``PYTHONPATH=. python bench/bench_steps.py [--quick]``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, cast

from bench.common import Figure, Result, percentile, write_result
from bench.roundtrips import RoundTrips
from tests.support.fleet import NODE, FleetHarness, example_pod
from tests.support.services import wait_until
from vkec2.cli.procs import ManagedProcess, start_agent_sim, start_moto, start_redis
from vkec2.domain.models import Phase

POOL = "warm"
#: The round trips that write the pod record under its fence (a step_end's guard or end that writes).
FENCED = ("script:cas_write", "script:schedule_next", "script:finish_chain")
#: The round trips of the pod's own state: lock, read, writes, due step, release (the step's overhead,
#: whatever its side effects); a lock release is the pod's when the step took a plain ``acquire``.
POD_STATE = ("script:acquire", "script:acquire_read", "HGETALL", "HMGET", *FENCED)
#: A new connection's handshake and kombu's first declarations: not the step's.
SETUP = ("CLIENT", "HELLO", "SELECT", "PING", "SCRIPT", "AUTH")


def pod_state(trips: Counter[str]) -> int:
    """Round trips of ``trips`` spent on the pod's lock, record, due step (guards before side effects out)."""
    own = sum(n for label, n in trips.items() if label in POD_STATE)
    ends = sum(
        n for label, n in trips.items() if label.startswith("script:step_end:") and ":guard" not in label
    )
    releases = min(trips["script:release"], trips["script:acquire"])
    return own + ends + releases


def setup(label: str) -> bool:
    return label.split(" ")[0] in SETUP or label.startswith("pipeline(MULTI")


def fill_pool(fleet: FleetHarness, wanted: int, run: Any, timeout: float = 120) -> None:
    """Run the warm-pool reconcile (``run()``) until ``wanted`` members are Ready."""
    deadline = time.monotonic() + timeout
    while len(fleet.store.pool_ready(POOL)) < wanted:
        if time.monotonic() > deadline:
            raise TimeoutError(f"warm pool has {len(fleet.store.pool_ready(POOL))} of {wanted} members Ready")
        run()
        time.sleep(0.5)


def reconcile_once(fleet: FleetHarness, timeout: float = 60) -> None:
    """Send one warm-pool reconcile to the worker and wait until it has run (no backlog of passes
    left to compete with the pods' steps afterwards)."""
    key = fleet.store.keys.maintenance_last("vkec2.maintenance.warm_pools")
    sent = time.time()
    fleet.send("vkec2.maintenance.warm_pools")
    wait_until(lambda: float(fleet.store.redis.hget(key, "ts") or 0) > sent, timeout, "a warm-pool pass")


def in_process(fleet: FleetHarness, pods: int) -> tuple[dict[str, list[Counter[str]]], str]:
    """Carry ``pods`` pods to Running step by step here; round trips per step kind, and the profile."""
    os.environ["VKEC2_CONFIG"] = str(fleet.config_path)
    from tasks import maintenance
    from tasks import pods as pod_tasks

    fill_pool(fleet, pods + 1, lambda: maintenance.warm_pools.apply())
    counter = RoundTrips()
    profile = cProfile.Profile()
    kinds: dict[str, list[Counter[str]]] = defaultdict(list)
    due_key = fleet.store.keys.due()
    # Pod 0 warms up (its steps open the connections and load the scripts); pods 1..N claim the
    # pool's members; pods N+1..2N find the pool empty and launch cold.
    for i in range(2 * pods + 1):
        path = "warm" if i <= pods else "cold"
        pod = example_pod(f"steps-{i}")
        uid = str(pod["metadata"]["uid"])
        generation = fleet.store.put_desired(pod, NODE)
        kwargs: dict[str, Any] = {"uid": uid, "generation": generation}
        task_id: str | None = None
        for _ in range(50):
            before = fleet.record(uid).phase
            counter.trips.clear()
            with counter.counting():
                profile.enable()
                pod_tasks.create.apply(kwargs=kwargs, task_id=task_id)
                profile.disable()
            rec = fleet.record(uid)
            if i > 0:
                trips = Counter({k: n for k, n in counter.trips.items() if not setup(k)})
                kinds[f"{path}: {before.value} -> {rec.phase.value}"].append(trips)
            if rec.phase is not Phase.PENDING and not rec.phase.creating:
                break
            due = fleet.store.redis.zscore(due_key, uid)
            if due is not None:
                time.sleep(max(0.0, float(due) - time.time()))
            kwargs, task_id = {"uid": uid, "continuation": True}, rec.next_task
        if fleet.record(uid).phase is not Phase.RUNNING:
            raise RuntimeError(f"pod {uid} is {fleet.record(uid).phase.value}, not Running")
    text = io.StringIO()
    stats = pstats.Stats(profile, stream=text)
    stats.sort_stats("cumulative").print_stats(30)
    stats.sort_stats("tottime").print_stats(20)
    return kinds, text.getvalue()


def step_table(kinds: dict[str, list[Counter[str]]]) -> tuple[str, dict[str, float]]:
    """The round trips of each step kind, and the means per step over all of them."""
    lines: list[str] = []
    every: list[Counter[str]] = []
    for kind, samples in sorted(kinds.items()):
        every += samples
        totals = [sum(c.values()) for c in samples]
        fenced = [_fenced(c) for c in samples]
        own = [pod_state(c) for c in samples]
        merged: Counter[str] = Counter()
        for c in samples:
            merged.update(c)
        detail = ", ".join(f"{label} {n / len(samples):.1f}" for label, n in merged.most_common())
        lines.append(
            f"{kind:<32} steps {len(samples):>3}  round trips {statistics.mean(totals):5.1f}  "
            f"pod state {statistics.mean(own):.1f}  fenced writes {statistics.mean(fenced):.1f}\n    {detail}"
        )
    means = {
        "round trips": statistics.mean(sum(c.values()) for c in every),
        "pod state": statistics.mean(pod_state(c) for c in every),
        "fenced writes": statistics.mean(_fenced(c) for c in every),
    }
    for path in ("warm", "cold"):
        mine = [c for kind, samples in kinds.items() if kind.startswith(path) for c in samples]
        pods = sum(len(samples) for kind, samples in kinds.items() if kind.startswith(f"{path}: Pending"))
        means[f"{path} steps per pod"] = len(mine) / max(1, pods)
        means[f"{path} round trips per pod"] = sum(sum(c.values()) for c in mine) / max(1, pods)
    return "\n".join(lines), means


def _fenced(trips: Counter[str]) -> int:
    return sum(n for label, n in trips.items() if label in FENCED or label.endswith("+write"))


def warm_latency(fleet: FleetHarness, pods: int, rate: float) -> list[float]:
    """create→Running (seconds) of ``pods`` pods submitted at ``rate`` per second, each claiming a member."""
    fleet.start_worker(concurrency=8)
    fill_pool(fleet, pods, lambda: reconcile_once(fleet), timeout=300)
    uids: list[str] = []
    started = time.monotonic()
    for i in range(pods):
        time.sleep(max(0.0, started + i / rate - time.monotonic()))
        uids.append(fleet.submit(example_pod(f"warm-{i}")))
    fleet.wait_phase(uids, {Phase.RUNNING}, timeout=120 + pods)
    reached: dict[str, float] = {}
    entries = cast(list[tuple[str, dict[str, str]]], fleet.store.redis.xrange(fleet.store.keys.outbox(NODE)))
    for entry_id, fields in entries:
        if fields.get("phase") == Phase.RUNNING.value:
            reached.setdefault(fields["uid"], int(entry_id.split("-")[0]) / 1000)
    cold = [u for u in uids if fleet.record(u).instance_id not in fleet_claimed(fleet, u)]
    if cold:
        print(f"note: {len(cold)} pods did not claim a warm member")
    return [reached[u] - fleet.record(u).created_at for u in uids]


def fleet_claimed(fleet: FleetHarness, uid: str) -> set[str]:
    """The instance of ``uid`` when it was claimed from the pool (its record's reason says so)."""
    entries = fleet.store.outbox_events(NODE, count=100_000)
    claimed = {e.instance_id for _, e in entries if e.uid == uid and "warm pool" in e.message}
    return claimed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="20 warm pods instead of 100")
    parser.add_argument("--pods", type=int, default=0, help="warm pods to create (overrides --quick)")
    parser.add_argument("--rate", type=float, default=10.0, help="pods submitted per second")
    parser.add_argument("--steps-pods", type=int, default=5, help="pods carried step by step in-process")
    parser.add_argument(
        "--no-rate-limits", action="store_true", help="the warm run without the fleet's EC2 token buckets"
    )
    parser.add_argument("--profile-out", default="", help="write the profile's text to this file")
    args = parser.parse_args()
    pods = args.pods or (20 if args.quick else 100)
    for key, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
        os.environ[key] = value
    os.environ["AWS_DEFAULT_REGION"] = "us-west-2"
    began = time.monotonic()
    procs: list[ManagedProcess] = []
    fleets: list[FleetHarness] = []
    try:
        redis_proc, redis_url = start_redis()
        moto, moto_url = start_moto()
        procs += [redis_proc, moto]
        sim, endpoint = start_agent_sim(moto_url)
        procs.append(sim)
        tmp = Path(tempfile.mkdtemp(prefix="bench-steps-"))
        base: dict[str, Any] = {"celery": {"visibility_timeout_seconds": 600, "max_countdown_seconds": 2}}
        steps_fleet = FleetHarness(
            tmp,
            f"{redis_url}/1",
            moto_url,
            endpoint,
            {**base, "warm_pools": [{"name": POOL, "desired_count": args.steps_pods + 1}]},
        )
        fleets.append(steps_fleet)
        kinds, profile = in_process(steps_fleet, args.steps_pods)
        table, means = step_table(kinds)
        print(table)
        print("mean per create step: " + ", ".join(f"{k} {v:.2f}" for k, v in means.items()))
        if args.profile_out:
            Path(args.profile_out).write_text(profile)
        else:
            print(profile[:6000])
        warm_fleet = FleetHarness(
            tmp,
            f"{redis_url}/2",
            moto_url,
            endpoint,
            {
                **base,
                "warm_pools": [{"name": POOL, "desired_count": pods}],
                **({"rate_limits": {"enabled": False}} if args.no_rate_limits else {}),
            },
        )
        fleets.append(warm_fleet)
        latency = warm_latency(warm_fleet, pods, args.rate)
        p50, p99 = percentile(latency, 50), percentile(latency, 99)
        print(
            f"warm create->Running of {pods} pods at {args.rate:g}/s: p50 {p50 * 1000:.0f} ms, "
            f"p99 {p99 * 1000:.0f} ms, max {max(latency) * 1000:.0f} ms"
        )
        trips, own, fenced = means["round trips"], means["pod state"], means["fenced writes"]
        figures = [
            Figure(
                "Redis round trips per create step (mean, side effects and publish included)", round(trips, 2)
            ),
            Figure(
                "Redis round trips per create step for the pod's lock, record and next step (mean)",
                round(own, 2),
                goal="<= 3",
                met=own <= 3,
            ),
            Figure("fenced writes per create step (mean)", round(fenced, 2), goal="<= 1", met=fenced <= 1),
            Figure("create steps per warm pod", round(means["warm steps per pod"], 2)),
            Figure("Redis round trips per warm create", round(means["warm round trips per pod"], 1)),
            Figure("create steps per cold pod", round(means["cold steps per pod"], 2)),
            Figure("Redis round trips per cold create", round(means["cold round trips per pod"], 1)),
            Figure(
                f"warm create->Running p50 ({pods} pods at {args.rate:g}/s)",
                round(p50 * 1000),
                "ms",
                goal="<= 300 ms",
                met=p50 <= 0.3,
            ),
            Figure(
                f"warm create->Running p99 ({pods} pods at {args.rate:g}/s)",
                round(p99 * 1000),
                "ms",
                goal="<= 1000 ms",
                met=p99 <= 1.0,
            ),
        ]
        write_result(
            Result(
                name="steps",
                title="Create steps: Redis round trips, warm create latency",
                command="PYTHONPATH=. python bench/bench_steps.py" + (" --quick" if args.quick else ""),
                description=__doc__.split("\n\n")[0] if __doc__ else "",
                figures=figures,
                quick=args.quick,
                seconds=time.monotonic() - began,
            )
        )
    finally:
        for fleet in fleets:
            fleet.stop()
        for proc in reversed(procs):
            proc.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
