"""Two RedBeat beats on one cluster: each periodic task runs once per period, and killing the active
beat hands over to the standby within 30 s (here: within lock_timeout + max_loop_interval)."""

from __future__ import annotations

import itertools
import signal
import time

from tests.maintenance.conftest import Make
from tests.support.fleet import FleetHarness
from tests.support.services import ManagedProcess, wait_until

PERIOD = 1.0
TASKS = (
    "vkec2.health.sweep",
    "vkec2.maintenance.warm_pools",
    "vkec2.maintenance.quotas",
    "vkec2.maintenance.status_log",
    "vkec2.maintenance.gc",
)


def runs(fleet: FleetHarness, task: str, since: float) -> list[float]:
    stamps = [float(t) for t in fleet.store.redis.lrange(fleet.store.keys.maintenance_runs(task), 0, -1)]
    return sorted(t for t in stamps if t >= since)


def assert_once_per_period(fleet: FleetHarness, since: float, until: float) -> None:
    for task in TASKS:
        stamps = [t for t in runs(fleet, task, since) if t <= until]
        window = until - since
        assert len(stamps) >= window / PERIOD - 2, (task, len(stamps), window)
        assert len(stamps) <= window / PERIOD + 1, (task, len(stamps), window)
        gaps = [b - a for a, b in itertools.pairwise(stamps)]
        assert all(g > PERIOD / 2 for g in gaps), (task, gaps)  # never twice in one period


def test_two_beats_one_active_and_failover_within_30s(make_fleet: Make) -> None:
    fleet = make_fleet(
        health={"interval_seconds": PERIOD},
        status_interval_seconds=PERIOD,
        beat={
            "lock_timeout_seconds": 4,
            "max_loop_interval_seconds": 1.0,
            "warm_pools_interval_seconds": PERIOD,
        },
        quotas={"enabled": False, "interval_seconds": PERIOD},
        gc={"interval_seconds": PERIOD},
    )
    fleet.start_worker(concurrency=4)
    beats = [fleet.start_beat(), fleet.start_beat()]

    def active() -> list[ManagedProcess]:
        return [b for b in beats if "beat: Acquired lock" in b.output()]

    wait_until(lambda: len(active()) >= 1, 30, "a beat to take the lock")
    assert len(active()) == 1
    start = time.time()
    wait_until(lambda: time.time() - start > 6, 10, "six periods")
    assert_once_per_period(fleet, start + PERIOD, time.time() - PERIOD)
    assert len(active()) == 1, "the standby sent tasks while the active beat held the lock"

    leader = active()[0]
    standby = next(b for b in beats if b is not leader)
    leader.kill(signal.SIGKILL)
    killed = time.time()
    wait_until(lambda: "beat: Acquired lock" in standby.output(), 30, "the standby to take over")
    wait_until(lambda: bool(runs(fleet, "vkec2.health.sweep", killed + 0.5)), 30, "a sweep after fail-over")
    handover = runs(fleet, "vkec2.health.sweep", killed + 0.5)[0] - killed
    assert handover <= 30, handover
    after = time.time()
    wait_until(lambda: time.time() - after > 5, 10, "five more periods")
    assert_once_per_period(fleet, after + PERIOD, time.time() - PERIOD)
