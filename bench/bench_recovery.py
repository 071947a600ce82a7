"""Benchmark: how long the fleet takes to recover from a killed worker, a killed beat, a lost Redis.

Three scenarios, each on real processes on free loopback ports (private ``redis-server``s, moto
behind the AWS-like EC2 double with the end-to-end preset, the agent simulator), every process
stopped by its PID at the end:

1. **Killed worker**: ``--pods`` pods created on two Celery workers (4 threads) with beat running,
   the broker's deployed 600 s visibility timeout and the resume task at its defaults (the fleet
   harness's 2 s ``celery.max_countdown_seconds``); ``--worker-kills`` times, once ``k / (kills + 3)``
   of the pods have left Pending, the steps one worker holds (running, reserved, counting down:
   ``celery inspect``) are noted and the worker is SIGKILLed by PID (a replacement started at once,
   as a Deployment would; a kill waits until two workers are ready, so one always lives on). For
   each of those pods: the time from the kill until its record is written again (its next step or
   phase change). Bound: ``celery.lock_ttl_seconds`` +
   ``beat.resume_interval_seconds`` + ``celery.resume_slack_seconds`` (docs/maintenance.md, "Resume").
2. **Beat fail-over**: two ``celery beat`` with RedBeat on one Redis (no worker: what is observed is
   beat sending); the one holding the lock is SIGKILLed; the time until the standby sends the next
   periodic task, seen in Redis as a RedBeat entry's ``total_run_count`` growing. Bound:
   ``beat.lock_timeout_seconds`` + ``beat.max_loop_interval_seconds`` (docs/maintenance.md, "Beat").
3. **Redis loss**: a standalone producer (``--manifests``, its default 10 s lease interval) runs
   ``--loss-pods`` pods on a Redis of this scenario's own; once all run, FLUSHALL. Per pod: the time
   until its record is back (the producer's epoch check relists: "within one lease interval",
   docs/architecture.md "When Redis loses its data") and until it is Running again (row C27); then
   whether each is on its old instance, and the RunInstances and duplicates since the flush (goal 0).

Hand-written because it drives this project's own processes; no benchmark tool knows them.
``--quick``: smaller counts, and the two fleet scenarios run side by side (each on its own Redis
and EC2 endpoint; their figures are bound by timers, not CPU).
Run: ``PYTHONPATH=. python bench/bench_recovery.py [--quick]``; figures go to
``bench/results/recovery.json`` (:mod:`bench.common`).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from pathlib import Path

from bench.common import Figure, Result, median, percentile, write_result
from producer.standalone import parse_manifest
from tests.support.awslike import E2E_DEFAULT
from tests.support.ec2proxy import Ec2Proxy
from tests.support.fleet import NODE, FleetHarness, example_pod, fleet_behind
from tests.support.services import wait_until
from vkec2.broker.app import worker_argv
from vkec2.cli.procs import ManagedProcess, start_agent_sim, start_moto, start_redis
from vkec2.domain.models import Phase

#: Lost messages come back from the broker after its deployed visibility timeout only (600 s).
DEPLOYED = {"celery": {"visibility_timeout_seconds": 600}}

#: The producer's default ``--lease-interval``: its epoch check, hence a lost Redis noticed, runs this often.
LEASE_INTERVAL = 10.0
#: The producer's heartbeat runs every lease interval +-10 % (``Heartbeat``'s jitter, producer/lease.py),
#: so "within one lease interval" (docs/architecture.md) is at most this long after the loss.
REBUILD_BOUND = LEASE_INTERVAL * 1.1


@contextmanager
def own_redis() -> Iterator[str]:
    """A private ``redis-server`` on a free port for one scenario, stopped by its PID afterwards."""
    proc, url = start_redis()
    try:
        yield url
    finally:
        proc.stop()


def spawn_worker(fleet: FleetHarness) -> tuple[str, ManagedProcess]:
    """Start one Celery worker (4 threads) of ``fleet`` without waiting for it: (node name, process)."""
    name = f"w{len(fleet.workers)}-{fleet.cluster}@localhost"
    argv = worker_argv(name, concurrency=4, queues=["pods", "health", "maintenance"])
    proc = ManagedProcess("worker", argv, env=fleet.env()).start()
    fleet.workers.append(proc)  # stopped with the fleet
    return name, proc


def ready(proc: ManagedProcess) -> bool:
    return proc.alive() and "ready." in proc.output()


def held_by(fleet: FleetHarness, name: str) -> set[str]:
    """The pods whose step worker ``name`` is running, has reserved or is counting down."""
    inspect = fleet.app.control.inspect(destination=[name], timeout=2.0)
    uids: set[str] = set()
    for reply in (inspect.active(), inspect.reserved(), inspect.scheduled()):
        for requests in (reply or {}).values():
            for item in requests:
                request = item.get("request", item)  # scheduled() wraps each request with its ETA
                kwargs = request.get("kwargs") or {}
                if isinstance(kwargs, dict) and "uid" in kwargs:
                    uids.add(str(kwargs["uid"]))
    return uids


def killed_worker(fleet: FleetHarness, pods: int, kills: int) -> list[Figure]:
    """Scenario 1 (see the module docstring): ``kills`` SIGKILLs, once ``k / (kills + 3)`` of the
    pods have left Pending; a pod's time runs from the kill that took its step to its next write."""
    s = fleet.settings
    bound = s.celery.lock_ttl_seconds + s.beat.resume_interval_seconds + s.celery.resume_slack_seconds
    workers = [spawn_worker(fleet) for _ in range(2)]
    fleet.start_beat()
    wait_until(lambda: all(ready(p) for _, p in workers), 60, "the Celery workers to be ready")
    uids = [fleet.submit(example_pod(f"kill-{i}")) for i in range(pods)]
    thresholds = [pods * k // (kills + 3) for k in range(1, kills + 1)]  # the first half
    waiting: dict[str, float] = {}  # pod -> the kill that took its step, until its next write
    back: list[float] = []
    hit = 0

    def step() -> bool:
        nonlocal hit
        for uid, killed in list(waiting.items()):
            rec = fleet.store.get(uid)
            if rec is not None and rec.updated_at > killed:
                back.append(rec.updated_at - killed)
                del waiting[uid]
        if thresholds and sum(fleet.record(u).phase is not Phase.PENDING for u in uids) >= thresholds[0]:
            alive = [(n, p) for n, p in workers if ready(p)]
            if len(alive) >= 2:  # one worker always lives on to run the resume task
                victim = alive[0]
                thresholds.pop(0)
                held = held_by(fleet, victim[0])
                victim[1].kill(signal.SIGKILL)
                killed = time.time()
                workers.remove(victim)
                workers.append(spawn_worker(fleet))  # restarted at once, as a Deployment would
                hit += len(held)
                for uid in held:
                    waiting.setdefault(uid, killed)
        return not thresholds and not waiting

    wait_until(step, 180 + kills * (bound + 30), "the killed workers' pods to make progress", interval=0.1)
    resumed = sum(w.output().count("published again") for w in fleet.workers)
    worst = max(back, default=float("nan"))
    why = (
        f"lock TTL {s.celery.lock_ttl_seconds:g} + resume interval {s.beat.resume_interval_seconds:g} "
        f"+ slack {s.celery.resume_slack_seconds:g} s"
    )
    return [
        Figure(
            "killed worker: pods whose step a killed worker held",
            hit,
            "pods",
            note=f"{pods} pods on 2 workers x 4 threads; {kills} SIGKILL(s), each worker restarted at once",
        ),
        Figure("killed worker: kill to the pod's next step, p50", median(back), "s"),
        Figure(
            "killed worker: kill to the pod's next step, max",
            worst,
            "s",
            goal=f"<= {bound:g} s ({why})",
            met=worst <= bound,
            ratio=worst / bound,
        ),
        Figure("killed worker: steps published again by the resume task", resumed, "steps"),
    ]


def beat_sent(fleet: FleetHarness) -> int:
    """How many periodic tasks beat has sent so far: the sum of RedBeat's ``total_run_count``."""
    r = fleet.store.redis
    schedule = fleet.app.conf.redbeat_key_prefix + ":schedule"
    total = 0
    for key in r.zrange(schedule, 0, -1):
        meta = r.hget(str(key), "meta")
        if meta:
            total += int(json.loads(meta).get("total_run_count", 0))
    return total


def leader(beats: list[ManagedProcess]) -> ManagedProcess | None:
    """The live beat that holds RedBeat's lock (it logged taking it), if any."""
    return next((b for b in beats if b.alive() and "beat: Acquired lock" in b.output()), None)


def one_failover(fleet: FleetHarness, beats: list[ManagedProcess]) -> tuple[float, float, float]:
    """Kill the active beat at a random point of its loop: (s to the standby's next task sent,
    s to its taking the lock, s the lock had left at the kill)."""
    beat = fleet.settings.beat
    wait_until(lambda: leader(beats) is not None, 60, "a beat to hold the lock")
    count = beat_sent(fleet)
    wait_until(lambda: beat_sent(fleet) > count, 60, "the active beat to send a task")
    time.sleep(random.uniform(0, beat.max_loop_interval_seconds))
    active = leader(beats)
    assert active is not None
    standby = next(b for b in beats if b is not active and b.alive())
    left = max(0, int(fleet.store.redis.pttl(fleet.app.conf.redbeat_key_prefix + ":lock"))) / 1000
    active.kill(signal.SIGKILL)
    killed = time.time()
    before = beat_sent(fleet)
    took: list[float] = []

    def sent_again() -> bool:
        if not took and "beat: Acquired lock" in standby.output():
            took.append(time.time() - killed)
        return beat_sent(fleet) > before

    limit = beat.lock_timeout_seconds + 3 * beat.max_loop_interval_seconds + 30
    wait_until(sent_again, limit, "the standby beat to send a task", interval=0.05)
    sent = time.time() - killed
    return sent, took[0] if took else sent, left


def beat_failover(tmp: Path, trials: int) -> list[Figure]:
    """Scenario 2 (see the module docstring)."""
    with own_redis() as url:
        fleet = FleetHarness(tmp, url, "http://127.0.0.1:9", "127.0.0.1:9")  # beat reaches neither
        try:
            return measure_failover(fleet, trials)
        finally:
            fleet.stop()


def measure_failover(fleet: FleetHarness, trials: int) -> list[Figure]:
    """``trials`` fail-overs between two beats of ``fleet`` (a fresh standby after each) as figures."""
    beat = fleet.settings.beat
    results: list[tuple[float, float, float]] = []
    beats = [fleet.start_beat(), fleet.start_beat()]
    for trial in range(trials):
        if trial:
            beats.append(fleet.start_beat())  # a standby again
        results.append(one_failover(fleet, beats))
    sent, acquired, ttl_left = (list(column) for column in zip(*results, strict=True))
    bound = beat.lock_timeout_seconds + beat.max_loop_interval_seconds
    worst = max(sent)
    return [
        Figure(
            "beat fail-over: kill to the standby's next task sent, p50",
            median(sent),
            "s",
            note=f"{trials} kill(s) of the active beat, two RedBeat beats",
        ),
        Figure(
            "beat fail-over: kill to the standby's next task sent, max",
            worst,
            "s",
            goal=f"<= {bound:g} s (lock_timeout {beat.lock_timeout_seconds} + max_loop_interval "
            f"{beat.max_loop_interval_seconds:g} s)",
            met=worst <= bound,
            ratio=worst / bound,
        ),
        Figure("beat fail-over: kill to the standby's lock, max", max(acquired), "s"),
        Figure(
            "beat fail-over: lock TTL left at the kill, mean",
            sum(ttl_left) / len(ttl_left),
            "s",
            note=f"redbeat_lock_timeout (beat.lock_timeout_seconds) = {beat.lock_timeout_seconds} s",
        ),
    ]


def manifest(names: list[str]) -> str:
    return "".join(
        f"---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n"
        f"  terminationGracePeriodSeconds: 1\n"
        f'  containers: [{{name: main, image: sim, command: [sleep, "3600"]}}]\n'
        for name in names
    )


def redis_loss(fleet: FleetHarness, proxy: Ec2Proxy, tmp: Path, pods: int) -> list[Figure]:
    """Scenario 3 (see the module docstring)."""
    workers = [spawn_worker(fleet) for _ in range(2)]
    fleet.start_beat()
    wait_until(lambda: all(ready(p) for _, p in workers), 60, "the Celery workers to be ready")
    manifests = tmp / f"manifests-{fleet.cluster}"
    manifests.mkdir()
    text = manifest([f"loss-{i:03d}" for i in range(pods)])
    (manifests / "pods.yaml").write_text(text)
    uids = {str(p["metadata"]["uid"]) for p in parse_manifest("pods.yaml", text, NODE)}
    argv = fleet.producer_argv(
        NODE, "--no-kubelet", "--lease-interval", f"{LEASE_INTERVAL:g}", "--manifests", str(manifests)
    )
    producer = ManagedProcess("producer", argv, env=fleet.env()).start()
    fleet.workers.append(producer)  # stopped with the fleet
    fleet.wait_phase(uids, {Phase.RUNNING}, timeout=300)
    before = {uid: fleet.record(uid).instance_id for uid in uids}

    fleet.store.redis.flushall()
    lost = time.time()
    rebuilt: dict[str, float] = {}
    running: dict[str, float] = {}

    def recovered() -> bool:
        for uid in uids - running.keys():
            rec = fleet.store.get(uid)
            if rec is None:
                continue
            rebuilt.setdefault(uid, time.time() - lost)
            if rec.phase is Phase.RUNNING:
                running[uid] = time.time() - lost
        return len(running) == len(uids)

    wait_until(recovered, 300, "every pod rebuilt and Running again", interval=0.1)
    same = sum(fleet.record(uid).instance_id == before[uid] for uid in uids)
    launched = sum(len(e.launched) for e in proxy.log.events("RunInstances") if e.at > lost)
    live = fleet.instances_by_uid()
    duplicates = sum(len(live.get(uid, [])) > 1 for uid in uids)
    old = set(before.values())
    terminated = sum(iid in old for e in proxy.log.events("TerminateInstances") for iid in e.terminated)
    rebuild_worst = max(rebuilt.values())
    return [
        Figure(
            "Redis loss: FLUSHALL to record rebuilt, p50",
            median(list(rebuilt.values())),
            "s",
            note=f"{pods} Running pods, standalone producer, --lease-interval {LEASE_INTERVAL:g} s",
        ),
        Figure(
            "Redis loss: FLUSHALL to record rebuilt, max",
            rebuild_worst,
            "s",
            goal=f"<= {REBUILD_BOUND:g} s (one lease interval of {LEASE_INTERVAL:g} s + 10 % jitter)",
            met=rebuild_worst <= REBUILD_BOUND,
            ratio=rebuild_worst / REBUILD_BOUND,
        ),
        Figure("Redis loss: FLUSHALL to Running again, p50", median(list(running.values())), "s"),
        Figure(
            "Redis loss: FLUSHALL to Running again, max",
            max(running.values()),
            "s",
            note=f"95th percentile {percentile(list(running.values()), 95):.1f} s",
        ),
        Figure(
            "Redis loss: record rebuilt to Running again (row C27), max",
            max(running[uid] - rebuilt[uid] for uid in uids),
            "s",
            note="the rebuilt records' first create steps, on 2 workers x 4 threads",
        ),
        Figure(
            "Redis loss: pods Running on their old instance", same, "pods", goal=f"= {pods}", met=same == pods
        ),
        Figure(
            "Redis loss: instances launched after the flush",
            launched,
            "instances",
            goal="= 0",
            met=launched == 0,
        ),
        Figure(
            "Redis loss: old instances terminated after the flush",
            terminated,
            "instances",
            goal="= 0",
            met=terminated == 0,
        ),
        Figure(
            "Redis loss: pods with two live instances", duplicates, "pods", goal="= 0", met=duplicates == 0
        ),
    ]


def timed(label: str, scenario: Callable[[], list[Figure]]) -> list[Figure]:
    """Run ``scenario`` and say on stderr how long it took."""
    started = time.monotonic()
    figures = scenario()
    print(f"{label}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    return figures


def run_fleet(
    scenario: Callable[[FleetHarness], list[Figure]], proxy: Ec2Proxy, tmp: Path, endpoint: str
) -> list[Figure]:
    """Run ``scenario`` on a fleet of its own (private Redis, AWS-like EC2), stopped afterwards."""
    with own_redis() as url:
        fleet = fleet_behind(proxy, tmp, url, endpoint, DEPLOYED, aws_like=E2E_DEFAULT)
        try:
            return scenario(fleet)
        finally:
            fleet.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="smaller counts, the fleet scenarios side by side (about 40 s)"
    )
    parser.add_argument("--pods", type=int, help="pods of the killed-worker scenario (40; quick 16)")
    parser.add_argument("--worker-kills", type=int, help="workers SIGKILLed during the creates (3; quick 1)")
    parser.add_argument("--beat-kills", type=int, help="beat fail-overs measured (3; quick 1)")
    parser.add_argument("--loss-pods", type=int, help="Running pods when Redis is flushed (50; quick 12)")
    args = parser.parse_args(argv)
    pods = (16 if args.quick else 40) if args.pods is None else args.pods
    kills = (1 if args.quick else 3) if args.worker_kills is None else args.worker_kills
    trials = (1 if args.quick else 3) if args.beat_kills is None else args.beat_kills
    loss_pods = (12 if args.quick else 50) if args.loss_pods is None else args.loss_pods
    for name, value in (
        ("pods", pods),
        ("worker-kills", kills),
        ("beat-kills", trials),
        ("loss-pods", loss_pods),
    ):
        if value < 1:
            parser.error(f"--{name} must be at least 1, not {value}")
    for key, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
        os.environ[key] = value
    os.environ["AWS_DEFAULT_REGION"] = "us-west-2"
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="bench-recovery-"))
    procs: list[ManagedProcess] = []
    proxies: list[Ec2Proxy] = []
    figures: list[Figure] = []
    try:
        moto, moto_url = start_moto()
        procs.append(moto)
        sim, endpoint = start_agent_sim(moto_url)
        procs.append(sim)
        # Each fleet scenario has an EC2 endpoint of its own: its buckets and its call log.
        for _ in range(2):
            proxies.append(Ec2Proxy(moto_url).start())
        kill_proxy, loss_proxy = proxies
        # Beat's fail-over is timer-bound and needs no fleet: it runs beside the fleet scenarios. Quick
        # mode runs those two side by side as well (each on its own Redis and EC2 endpoint).
        with ThreadPoolExecutor(3 if args.quick else 1) as pool:
            beat = pool.submit(timed, "beat fail-over", lambda: beat_failover(tmp, trials))

            def kill() -> list[Figure]:
                return run_fleet(partial(killed_worker, pods=pods, kills=kills), kill_proxy, tmp, endpoint)

            def loss() -> list[Figure]:
                scenario = partial(redis_loss, proxy=loss_proxy, tmp=tmp, pods=loss_pods)
                return run_fleet(scenario, loss_proxy, tmp, endpoint)

            if args.quick:
                lost = pool.submit(timed, "Redis loss", loss)
                figures += timed("killed worker", kill) + lost.result()
            else:
                figures += timed("killed worker", kill) + timed("Redis loss", loss)
            figures += beat.result()
    finally:
        for proxy in proxies:
            proxy.stop()
        for proc in reversed(procs):
            proc.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    result = Result(
        name="recovery",
        title="Recovery times: a killed worker, a killed beat, Redis losing its data",
        command="PYTHONPATH=. python bench/bench_recovery.py" + (" --quick" if args.quick else ""),
        description=(__doc__ or "").split("\n\n")[0],
        figures=figures,
        quick=args.quick,
        seconds=time.monotonic() - started,
    )
    write_result(result)
    print(f"({result.seconds:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
