"""Rows L1 and L2 of the transition table: a finished pod releases its instance after a keep-alive.

The create chain records the phase the agent reports; when the workload will not run again
(restartPolicy Never, or OnFailure after a success) it schedules one more step, which terminates
the instance once ``agent.finished_keepalive_seconds`` have passed. The pod keeps its phase,
reason and statuses; its InstanceReady condition turns False with the reason ``InstanceReleased``.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.support.fakeagents import app_status
from tests.unit.fleet.world import World, pod
from vkec2.contract import INSTANCE_READY
from vkec2.domain.models import Phase

DONE = [{"name": "main", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]


def finished(world: World, reported: str, policy: str) -> str:
    inst = world.instance()
    world.seed(Phase.LAUNCHING, instance=inst, spec=pod(restart_policy=policy))
    ready = {"type": "Ready", "status": "False", "reason": "PodCompleted"}
    world.agents.status_by[inst["InstanceId"]] = app_status(
        reported, reason="Completed", containers=DONE, conditions=[ready]
    )
    return str(inst["InstanceId"])


def condition(world: World, kind: str) -> dict[str, Any]:
    return next(c for c in world.rec.conditions if c["type"] == kind)


@pytest.mark.parametrize(
    ("reported", "policy"), [("Succeeded", "Never"), ("Succeeded", "OnFailure"), ("Failed", "Never")]
)
def test_L1_a_workload_that_will_not_run_again_schedules_the_release(
    world: World, reported: str, policy: str
) -> None:
    iid = finished(world, reported, policy)

    delay = world.step()
    assert delay is not None and 0 < delay <= world.settings.celery.max_countdown_seconds
    rec = world.rec
    assert rec.phase is Phase(reported) and rec.finished_at > 0
    assert condition(world, INSTANCE_READY)["status"] == "True"  # kept for kubectl logs
    assert world.step() is not None  # the keep-alive is not over: poll again
    assert world.ec2.state(iid) == "running"


@pytest.mark.parametrize(
    ("reported", "policy"), [("Succeeded", "Always"), ("Failed", "OnFailure"), ("Failed", "Always")]
)
def test_L1_a_workload_that_may_run_again_keeps_its_instance(
    world: World, reported: str, policy: str
) -> None:
    iid = finished(world, reported, policy)

    assert world.step() is None
    assert world.step() is None
    assert world.ec2.state(iid) == "running"


def test_L2_after_the_keepalive_the_instance_is_terminated_and_the_status_kept(world: World) -> None:
    iid = finished(world, "Succeeded", "Never")
    world.step()
    statuses, reason = world.rec.container_statuses, world.rec.reason
    world.set(finished_at=time.time() - world.settings.agent.finished_keepalive_seconds - 1)

    assert world.step() is None
    rec = world.rec
    assert world.ec2.terminated() == [iid]
    assert (rec.phase, rec.reason, rec.container_statuses) == (Phase.SUCCEEDED, reason, statuses)
    assert rec.released_at > 0
    ready = condition(world, INSTANCE_READY)
    assert (ready["status"], ready["reason"]) == ("False", "InstanceReleased")
    assert iid in ready["message"] and "logs are gone" in ready["message"]
    assert {"type": "Ready", "status": "False", "reason": "PodCompleted"} in rec.conditions
    assert (world.events[-1].phase, world.events[-1].reason) == (Phase.SUCCEEDED, "InstanceReleased")
    assert world.step() is None  # released once
    assert world.ec2.terminated() == [iid]


def test_L2_a_zero_keepalive_releases_at_the_next_step(make_world: Any) -> None:
    world = make_world(agent={"endpoint": "private-ip", "port": 7443, "finished_keepalive_seconds": 0})
    iid = finished(world, "Succeeded", "Never")

    delay = world.step()
    assert delay is not None and delay < 1
    assert world.step() is None
    assert world.ec2.terminated() == [iid]


def test_L2_a_deleted_pod_is_left_to_its_delete(world: World) -> None:
    iid = finished(world, "Succeeded", "Never")
    world.step()
    world.set(deleted=True, finished_at=1.0)

    assert world.step() is None
    assert world.ec2.terminated() == []
    assert world.delete() is None  # the delete terminates it, without asking the agent
    assert world.ec2.terminated() == [iid]
    assert world.rec.phase is Phase.TERMINATED
