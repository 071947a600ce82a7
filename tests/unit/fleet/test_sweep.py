"""The health sweep's rules on the fakes: counters to Unhealthy, remediation, completions, lost instances.

A sweep here is :class:`~vkec2.fleet.sweep.HealthSweep` over the world of ``conftest.py`` with a
clock the test moves (no sleeps) and a ``publish`` that records what it would send; the end-to-end
version against Redis, moto and the agent simulator is ``tests/maintenance/test_health_sweep.py``.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.support.fakeagents import app_status
from tests.support.fakes import SWEEP_FLIGHT
from tests.unit.fleet.world import UID, World, pod
from vkec2.contract import AGENT_CONNECTED, FLAPPING, HEALTHY, INSTANCE_READY, POD_CREATE
from vkec2.domain.instances import Instance
from vkec2.domain.models import Phase
from vkec2.fleet.sweep import HealthSweep, SweepReport, remediate_lost


class Sweeper:
    """A health sweep over a world, with a hand-moved clock and a recorded ``publish``."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.now = time.time()
        self.published: list[tuple[str, str]] = []
        world.store.clock = lambda: self.now
        self.sweep = HealthSweep(
            world.settings,
            world.store,
            world.ec2,
            world.agents,
            world.lifecycle,
            lambda name, uid: self.published.append((name, uid)),
            clock=lambda: self.now,
        )

    def run(self, advance: float = 60.0) -> SweepReport:
        """One pass, ``advance`` seconds after the previous one (past spacing and back-off)."""
        self.now += advance
        return self.sweep.run()

    def running(self, **fields: Any) -> Instance:
        """A Running pod on a running instance whose agent serves."""
        inst = self.world.instance()
        self.world.seed(Phase.RUNNING, instance=inst, **fields)
        return inst


@pytest.fixture
def sweeper(world: World) -> Sweeper:
    return Sweeper(world)


def condition(world: World, kind: str) -> str:
    return next(str(c["status"]) for c in world.rec.conditions if c["type"] == kind)


def test_a_steady_healthy_pod_costs_no_write(sweeper: Sweeper) -> None:
    sweeper.running()
    first = sweeper.run()
    assert (first.pods, first.checked) == (1, 1)
    writes = len(sweeper.world.store.writes)
    assert condition(sweeper.world, HEALTHY) == "True"

    second = sweeper.run()
    assert second.checked == 1
    assert len(sweeper.world.store.writes) == writes
    assert sweeper.world.agents.methods() == ["serving", "status"] * 2


def test_failed_checks_count_up_to_unhealthy_then_replace(sweeper: Sweeper) -> None:
    world = sweeper.world
    inst = sweeper.running()
    world.agents.serving_by[inst["InstanceId"]] = False
    threshold = world.settings.health.unhealthy_threshold

    for n in range(1, threshold):
        report = sweeper.run()
        assert report.unhealthy == [] and world.rec.phase is Phase.RUNNING
        assert world.rec.health["failures"] == n
        assert world.rec.health["next_check"] > sweeper.now  # backed off
    report = sweeper.run()

    assert report.unhealthy == [UID] and report.remediated == [UID]
    rec = world.rec
    assert (rec.phase, rec.reason, rec.attempt) == (Phase.PENDING, "Unhealthy", 1)
    assert rec.instance_id == "" and rec.health == {**rec.health, "remediations": 1, "failures": 0}
    assert world.ec2.terminated() == [inst["InstanceId"]]
    assert sweeper.published == [("vkec2.pods.create", UID)]
    assert [(e.phase, e.reason) for e in world.events[-2:]] == [
        (Phase.RUNNING, "Unhealthy"),
        (Phase.PENDING, "Unhealthy"),
    ]


def test_a_check_within_the_back_off_is_skipped(sweeper: Sweeper) -> None:
    inst = sweeper.running()
    sweeper.world.agents.serving_by[inst["InstanceId"]] = False
    sweeper.run()

    report = sweeper.run(advance=0.5)
    assert report.checked == 0
    assert sweeper.world.rec.health["failures"] == 1


def test_unhealthy_with_restart_policy_never_fails(sweeper: Sweeper) -> None:
    world = sweeper.world
    inst = sweeper.running(spec=pod(restart_policy="Never"))
    world.agents.status_by[inst["InstanceId"]] = app_status("Failed", reason="Error")

    reports = [sweeper.run() for _ in range(world.settings.health.unhealthy_threshold)]
    assert reports[-1].failed == [UID] and reports[-1].remediated == []
    assert (world.rec.phase, world.rec.reason) == (Phase.FAILED, "Unhealthy")
    assert world.ec2.terminated() == [inst["InstanceId"]]
    assert sweeper.published == []


def test_a_recovered_pod_is_reported_healthy_again(sweeper: Sweeper) -> None:
    world = sweeper.world
    inst = sweeper.running(spec=pod(restart_policy="Never"))
    world.agents.serving_by[inst["InstanceId"]] = False
    sweeper.run()
    assert world.rec.health["failures"] == 1

    world.agents.serving_by[inst["InstanceId"]] = True
    sweeper.run()
    assert world.rec.health["failures"] == 0
    assert world.rec.phase is Phase.RUNNING


def test_flapping_is_reported(sweeper: Sweeper) -> None:
    world = sweeper.world
    inst = sweeper.running()
    flapped: list[str] = []
    for serving in (True, False, True, False, True):
        world.agents.serving_by[inst["InstanceId"]] = serving
        flapped += sweeper.run(advance=10.0).flapping
    assert flapped == [UID]
    assert condition(world, FLAPPING) == "True"
    assert world.events[-1].reason == "Flapping"


@pytest.mark.parametrize(("policy", "recorded"), [("OnFailure", True), ("Never", True), ("Always", False)])
def test_a_completed_workload_is_recorded(sweeper: Sweeper, policy: str, recorded: bool) -> None:
    world = sweeper.world
    inst = sweeper.running(spec=pod(restart_policy=policy))
    done = [{"name": "main", "state": {"terminated": {"exitCode": 0}}}]
    world.agents.status_by[inst["InstanceId"]] = app_status("Succeeded", reason="Completed", containers=done)

    report = sweeper.run()
    assert report.succeeded == ([UID] if recorded else [])
    rec = world.rec
    assert rec.phase is (Phase.SUCCEEDED if recorded else Phase.RUNNING)
    if recorded:
        assert rec.container_statuses == done
        assert (world.events[-1].phase, world.events[-1].reason) == (Phase.SUCCEEDED, "Completed")
        # The lifecycle wrote it: phase stamp, its conditions; and the chain resumes to release it.
        assert rec.finished_at > 0
        assert {c["type"] for c in rec.conditions} >= {INSTANCE_READY, AGENT_CONNECTED}
        assert sweeper.published == [(POD_CREATE, UID)]
    else:
        assert sweeper.published == []


@pytest.mark.parametrize("state", ["terminated", "stopped", "shutting-down", "gone"])
def test_a_lost_instance_is_replaced(sweeper: Sweeper, state: str) -> None:
    world = sweeper.world
    inst = sweeper.running()
    if state == "gone":
        del world.ec2.instances[inst["InstanceId"]]
    else:
        world.ec2.set_state(inst["InstanceId"], state)

    report = sweeper.run()
    assert report.remediated == [UID] and report.checked == 0
    assert (world.rec.phase, world.rec.reason, world.rec.attempt) == (Phase.PENDING, "InstanceLost", 1)
    assert sweeper.published == [("vkec2.pods.create", UID)]
    assert world.agents.calls == []


def test_an_impaired_instance_is_replaced(sweeper: Sweeper) -> None:
    world = sweeper.world
    inst = sweeper.running()
    world.ec2.impaired_ids[inst["InstanceId"]] = "system"

    report = sweeper.run()
    assert report.remediated == [UID]
    assert world.rec.reason == "InstanceImpaired"
    assert "system status check" in world.rec.message
    assert world.ec2.terminated() == [inst["InstanceId"]]


def test_stalled_chains_are_resumed(sweeper: Sweeper) -> None:
    world = sweeper.world
    stale = sweeper.now - sweeper.sweep.stall_seconds - 1
    world.seed(Phase.PROVISIONING, instance=world.instance("pending"), updated_at=stale)

    report = sweeper.run(advance=0)
    assert report.resumed == [UID]
    assert sweeper.published == [("vkec2.pods.create", UID)]


def test_a_stalled_delete_is_resumed(sweeper: Sweeper) -> None:
    world = sweeper.world
    stale = sweeper.now - sweeper.sweep.stall_seconds - 1
    world.seed(Phase.TERMINATING, instance=world.instance(), deleted=True, updated_at=stale)

    sweeper.run(advance=0)
    assert sweeper.published == [("vkec2.pods.delete", UID)]


@pytest.mark.parametrize(
    ("phase", "deleted", "age"),
    [(Phase.PROVISIONING, False, 1.0), (Phase.RUNNING, False, 1e6), (Phase.TERMINATED, True, 1e6)],
)
def test_live_or_finished_records_are_not_resumed(
    sweeper: Sweeper, phase: Phase, deleted: bool, age: float
) -> None:
    world = sweeper.world
    world.seed(phase, instance=world.instance(), deleted=deleted, updated_at=sweeper.now - age)

    report = sweeper.run(advance=0)
    assert report.resumed == [] and sweeper.published == []


def test_a_locked_pod_counts_as_busy(sweeper: Sweeper) -> None:
    sweeper.running()
    with sweeper.world.store.locked(UID):
        report = sweeper.run()
    assert report.busy == 1
    assert sweeper.world.rec.health == {}


def test_a_second_sweep_at_once_is_skipped(sweeper: Sweeper) -> None:
    sweeper.running()
    sweeper.world.store.flights.add(SWEEP_FLIGHT)

    report = sweeper.run()
    assert report.skipped and report.checked == 0


def test_gc_hands_pods_whose_instance_vanished_to_remediation(sweeper: Sweeper) -> None:
    world = sweeper.world
    inst = sweeper.running()
    records = world.store.records()

    assert remediate_lost(sweeper.sweep, records, live={inst["InstanceId"]: inst}) == []
    assert remediate_lost(sweeper.sweep, records, live={}) == [UID]
    assert (world.rec.phase, world.rec.reason) == (Phase.PENDING, "InstanceLost")
    assert sweeper.published == [("vkec2.pods.create", UID)]
