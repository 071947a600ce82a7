"""The chaos scenarios, and how one runs: pods through their lifecycle while its fault strikes.

A scenario (:class:`Scenario`) is a fault function run in a background thread next to the pods'
lifecycle (:func:`run_scenario`): the pods' manifests are written, the pods must reach Running;
the fault may wait for that (``ctx.running``), strike, and says when the pods may be deleted
(``ctx.release``); the pods must be Running again, then their manifests are removed
(``ctx.deleting``, some faults strike again then), their records must be gone, two orphan GC
passes run and the invariants are checked. Every wait is bounded by the stage timeout and the
scenario's deadline.
"""

from __future__ import annotations

import json
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import boto3

from tests.chaos.invariants import (
    DuplicateSampler,
    Findings,
    check_gone,
    check_leaks,
    check_live_kills,
    check_running,
    duplicates,
)
from tests.chaos.processes import Fleet, Services
from tests.support.services import wait_until
from vkec2.contract import ORPHAN_GC
from vkec2.domain.models import Phase


@dataclass(frozen=True)
class Pass:
    """How big and how long: the full pass (``make chaos``) or the reduced one (CI)."""

    name: str
    pods_total: int
    restart_after: float  # seconds a killed process stays down
    partition_seconds: float
    beat_down_seconds: float
    stage_timeout: float  # seconds for the pods of one stage to reach their state
    scenario_deadline: float
    total_deadline: float


FULL = Pass("full", 200, 15, 60, 30, 300, 900, 5400)
REDUCED = Pass("reduced", 21, 5, 30, 10, 120, 360, 1800)


class Ctx:
    """What a fault function sees: the fleet, the pods, the pass, and the stages of the lifecycle."""

    def __init__(self, fleet: Fleet, size: Pass, deadline: float) -> None:
        self.fleet = fleet
        self.uids: list[str] = []
        self.size = size
        self.deadline = deadline
        self.running = threading.Event()
        self.released = threading.Event()
        self.deleting = threading.Event()
        self.cancelled = threading.Event()  # the scenario is over: start nothing new
        self.replaced: dict[str, str] = {}  # pod UID -> the broken instance it must leave

    def wait(self, event: threading.Event) -> bool:
        """Wait for a stage; False when the scenario was cancelled or its deadline passed first."""
        while not event.wait(0.2):
            if self.cancelled.is_set() or time.monotonic() > self.deadline:
                return False
        return not self.cancelled.is_set()

    def pause(self, seconds: float) -> None:
        """Let a fault last (the point of the scenario, not a synchronisation); ends on cancel."""
        self.cancelled.wait(max(0.0, min(seconds, self.deadline - time.monotonic())))

    def release(self) -> None:
        self.released.set()

    def instance_of(self, uid: str) -> str | None:
        rec = self.fleet.fleet.store.get(uid)
        return rec.instance_id if rec is not None and rec.instance_id else None


Fault = Callable[[Ctx], None]


@dataclass(frozen=True)
class Scenario:
    name: str
    what: str
    fault: Fault
    sentinel: bool = False


# -- the faults ---------------------------------------------------------------------------------


def _kill_a_worker(ctx: Ctx) -> None:
    fleet = ctx.fleet
    alive = fleet.workers()
    if not alive:
        return
    victim = fleet.random.choice(alive)
    victim.kill()  # SIGKILL to its process group (the worker runs a thread pool)
    fleet.ledger.note(f"SIGKILL worker pid {victim.pid}")
    ctx.pause(ctx.size.restart_after)
    if ctx.cancelled.is_set():
        return
    fleet.fleet.start_worker(concurrency=3)
    fleet.ledger.note("worker restarted")


def worker_kill(ctx: Ctx) -> None:
    ctx.pause(1.0)
    _kill_a_worker(ctx)
    ctx.release()
    if ctx.wait(ctx.deleting):
        _kill_a_worker(ctx)


def _kill_producer(ctx: Ctx) -> None:
    producer = ctx.fleet.producer
    assert producer is not None
    producer.kill()
    ctx.fleet.ledger.note(f"SIGKILL producer pid {producer.pid}")
    ctx.pause(ctx.size.restart_after)
    producer.stop()
    if ctx.cancelled.is_set():
        return
    ctx.fleet.start_producer()
    ctx.fleet.ledger.note("producer restarted")


def producer_kill(ctx: Ctx) -> None:
    ctx.pause(1.0)
    _kill_producer(ctx)
    ctx.release()
    if ctx.wait(ctx.deleting):
        _kill_producer(ctx)


def beat_kill(ctx: Ctx) -> None:
    beat = ctx.fleet.beat
    assert beat is not None
    beat.kill()
    ctx.fleet.ledger.note(f"SIGKILL beat pid {beat.pid}")
    ctx.pause(ctx.size.beat_down_seconds)
    if ctx.cancelled.is_set():
        return
    ctx.fleet.start_beat()
    ctx.fleet.ledger.note("beat restarted")
    ctx.release()


def redis_loss(ctx: Ctx) -> None:
    if ctx.wait(ctx.running):
        ctx.fleet.redis.lose_data()
        ctx.fleet.ledger.note("redis restarted empty")
        ctx.pause(ctx.size.restart_after)
    ctx.release()


def sentinel_failover(ctx: Ctx) -> None:
    if ctx.wait(ctx.running):
        group = ctx.fleet.redis.sentinels()
        old = group.kill_master()
        ctx.fleet.ledger.note(f"SIGKILL redis master on port {old}")
        wait_until(lambda: group.master_port() != old, 30, "the sentinels to promote the replica", 0.2)
        ctx.fleet.ledger.note(f"sentinels promoted port {group.master_port()}")
        ctx.pause(ctx.size.restart_after)
        group.restart(old)
    ctx.release()


def partition(ctx: Ctx) -> None:
    cut = ctx.fleet.services.partition
    assert cut is not None
    if ctx.wait(ctx.running):
        cut.partition()
        ctx.fleet.ledger.note("workers cut off from every agent")
        try:
            ctx.pause(ctx.size.partition_seconds)
        finally:
            cut.heal()
        ctx.fleet.ledger.note("partition healed")
    ctx.release()


def agent_flap(ctx: Ctx) -> None:
    agents = ctx.fleet.services.agents
    assert agents is not None
    if not ctx.wait(ctx.running):
        ctx.release()
        return
    pods = list(ctx.uids)
    ctx.fleet.random.shuffle(pods)
    flappers = [iid for uid in pods[: max(1, len(pods) // 4)] if (iid := ctx.instance_of(uid))]
    dying = pods[max(1, len(pods) // 4) :][: max(2, len(pods) // 10)]  # an agent and an instance at least
    ledger = ctx.fleet.ledger
    for iid in flappers:
        ledger.instance(iid, "flapping agent")
    for _ in range(3):
        for iid in flappers:
            agents.not_serving(iid)
        ctx.pause(2)
        for iid in flappers:
            agents.clear(iid)
        ctx.pause(2)
    ec2 = boto3.client("ec2", endpoint_url=ctx.fleet.services.moto_url, region_name="us-west-2")
    for n, uid in enumerate(dying):
        iid = ctx.instance_of(uid)
        if iid is None:
            continue
        ctx.replaced[uid] = iid
        if n % 2 == 0:
            ledger.instance(iid, "agent died")
            agents.silent(iid)
        else:
            ledger.instance(iid, "instance died")
            ec2.terminate_instances(InstanceIds=[iid])  # behind the fleet's back, at moto itself
    ctx.release()


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("worker_kill", "SIGKILL a random worker mid-create and mid-delete", worker_kill),
    Scenario("redis_loss", "Redis restarted with its data lost while the pods run", redis_loss),
    Scenario(
        "sentinel_failover",
        "the Redis master SIGKILLed; the sentinels promote the replica",
        sentinel_failover,
        sentinel=True,
    ),
    Scenario("producer_kill", "SIGKILL the producer mid-create and mid-delete, restart it", producer_kill),
    Scenario("partition", "workers cut off from every agent, then healed", partition),
    Scenario("agent_flap", "agents flap NOT_SERVING; some agents and instances die", agent_flap),
    Scenario("beat_kill", "SIGKILL beat mid-create, restart it later", beat_kill),
)
BY_NAME = {s.name: s for s in SCENARIOS}


# -- running one --------------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    pods: int
    findings: Findings = field(default_factory=Findings)
    timings: dict[str, float] = field(default_factory=dict)
    error: str = ""
    log: list[str] = field(default_factory=list)
    last_words: list[str] = field(default_factory=list)  # of the fleet's processes, when not ok

    @property
    def ok(self) -> bool:
        return not self.error and self.findings.ok


def _wait_running(fleet: Fleet, uids: list[str], timeout: float, replaced: dict[str, str]) -> bool:
    """Every pod Running, those in ``replaced`` on another instance than the broken one."""

    def reached() -> bool:
        try:
            return all(
                (r := fleet.fleet.store.get(u)) is not None
                and r.phase is Phase.RUNNING
                and r.instance_id != replaced.get(u)
                for u in uids
            )
        except Exception:  # Redis down for a moment: a fault at work
            return False

    try:
        wait_until(reached, timeout, f"{len(uids)} pods to be Running", interval=0.5)
    except TimeoutError:
        return False
    return True


def _wait_gone(fleet: Fleet, uids: list[str], timeout: float) -> bool:
    def gone() -> bool:
        try:
            return all(fleet.fleet.store.get(u) is None for u in uids)
        except Exception:
            return False

    try:
        wait_until(gone, timeout, f"{len(uids)} pod records to be forgotten", interval=0.5)
    except TimeoutError:
        return False
    return True


def run_gc(fleet: Fleet, passes: int, timeout: float) -> list[object]:
    """Send ``passes`` orphan GC passes one after the other; their summaries."""
    store = fleet.fleet.store
    key = store.keys.maintenance_last(ORPHAN_GC)
    results: list[object] = []
    for _ in range(passes):
        sent = time.time()
        fleet.fleet.send(ORPHAN_GC)
        found: dict[str, object] = {}

        def finished(after: float = sent, into: dict[str, object] = found) -> bool:
            raw = store.redis.hgetall(key)
            if raw and float(raw["ts"]) > after:
                result = json.loads(raw["result"])
                if not (isinstance(result, dict) and result.get("skipped") is True):
                    into["result"] = result
                    return True
            return False

        wait_until(finished, timeout, "an orphan GC pass", interval=0.2)
        results.append(found["result"])
    return results


def run_scenario(
    services: Services, root: Path, scenario: Scenario, pods: int, size: Pass, seed: int
) -> Result:
    """One scenario on a fleet of its own; never raises (an error is part of the result)."""
    result = Result(scenario.name, pods)
    findings = result.findings
    started, started_at = time.monotonic(), time.time()
    deadline = started + size.scenario_deadline
    fleet = Fleet(services, root, scenario.name, sentinel=scenario.sentinel, seed=seed)
    ctx = Ctx(fleet, size, deadline)
    failure: list[str] = []

    def strike() -> None:
        try:
            scenario.fault(ctx)
        except Exception:
            failure.append(traceback.format_exc(limit=4))
        finally:
            ctx.release()

    thread = threading.Thread(target=strike, name=f"chaos-{scenario.name}", daemon=True)

    def stage_timeout() -> float:
        return max(1.0, min(size.stage_timeout, deadline - time.monotonic()))

    def mark(stage: str) -> None:
        result.timings[stage] = round(time.monotonic() - started, 1)

    try:
        fleet.start()
        mark("setup")
        assert services.proxy is not None
        since = time.time()
        uids = ctx.uids = fleet.add_pods(pods)
        with DuplicateSampler(fleet.fleet, findings):
            thread.start()
            if not _wait_running(fleet, uids, stage_timeout(), {}):
                check_running(fleet.fleet, uids, findings, "create", {})
            mark("running")
            ctx.running.set()
            ctx.wait(ctx.released)
            mark("fault")
            _wait_running(fleet, uids, stage_timeout(), ctx.replaced)
            check_running(fleet.fleet, uids, findings, "after the fault", ctx.replaced)
            mark("settled")
            deleted_at = fleet.remove_pods()
            ctx.deleting.set()
            _wait_gone(fleet, uids, stage_timeout())
            check_gone(fleet.fleet, uids, findings)
            mark("gone")
            thread.join(max(1.0, deadline - time.monotonic()))
            if thread.is_alive():
                failure.append("the fault did not finish before the scenario's deadline")
        for uid, ids in duplicates(fleet.fleet).items():
            findings.add("duplicates", f"at the end: pod {uid[:8]} has {len(ids)} live instances")
        try:
            run_gc(fleet, 2, stage_timeout())
        except TimeoutError as exc:
            findings.add("leaks", f"orphan GC did not run: {exc}")
        mark("gc")
        check_leaks(fleet.fleet, findings)
        check_live_kills(fleet.fleet, services.proxy.log, since, deleted_at, fleet.ledger, findings)
        result.error = "; ".join(failure)
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {str(exc)[:300]}"
    finally:
        ctx.cancelled.set()
        if thread.is_alive():  # a restart under way finishes (bounded by its readiness wait)
            thread.join(90)
        result.log = [f"{at - started_at:6.1f}s {what}" for at, what in fleet.ledger.events]
        if not result.ok:
            result.last_words = fleet.last_words()
        fleet.stop()
        mark("total")
    return result
