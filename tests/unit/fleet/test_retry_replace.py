"""Rows R1, R2 (retry or fail after a failed attempt), P1 to P3 (replace) and F1 (fail) of the table."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.support.fakes import FakeStore
from tests.unit.fleet.world import UID, World, pod
from vkec2.domain.models import Phase
from vkec2.errors import StaleFence


def lose_instance(world: World, **fields: Any) -> str:
    """Seed a Provisioning pod whose instance is gone, so the next step retries (row C7)."""
    inst = world.instance("pending")
    world.seed(Phase.PROVISIONING, instance=inst, **fields)
    world.ec2.set_state(inst["InstanceId"], "stopped")
    return str(inst["InstanceId"])


def test_R1_retry_resets_the_attempts_fields(world: World) -> None:
    doomed = lose_instance(world, attempt=1)

    assert world.step() is not None
    rec = world.rec
    assert (rec.phase, rec.attempt) == (Phase.PENDING, 2)
    assert (rec.instance, rec.instance_id, rec.endpoint, rec.launched_at) == ({}, "", "", 0.0)
    assert world.ec2.terminated() == [doomed]
    assert "retrying (attempt 3 of 3)" in rec.message
    assert world.events[-1].event_type == "Warning"


def test_R1_the_next_attempt_launches_with_a_fresh_client_token(world: World) -> None:
    lose_instance(world)
    world.step()

    world.step()
    tokens = [call["ClientToken"] for call in world.ec2.calls_of("RunInstances")]
    assert tokens == [f"vkec2-{UID}-1"]
    assert world.rec.phase is Phase.PROVISIONING


@pytest.mark.parametrize(("policy", "attempt"), [("Never", 0), ("Always", 2), ("OnFailure", 2)])
def test_R2_no_attempts_left_fails(world: World, policy: str, attempt: int) -> None:
    doomed = lose_instance(world, attempt=attempt, spec=pod(restart_policy=policy))

    assert world.step() is None
    rec = world.rec
    assert (rec.phase, rec.reason, rec.attempt) == (Phase.FAILED, "InstanceLost", attempt + 1)
    assert "giving up" in rec.message
    assert rec.instance_id == doomed  # kept for the record; the instance itself is terminated
    assert world.ec2.terminated() == [doomed]


@pytest.mark.parametrize("policy", ["Always", "OnFailure"])
@pytest.mark.parametrize("phase", [Phase.BOOTING, Phase.RUNNING, Phase.SUCCEEDED])
def test_P1_replace_starts_a_new_attempt(world: World, policy: str, phase: Phase) -> None:
    inst = world.instance()
    world.seed(phase, instance=inst, spec=pod(restart_policy=policy), attempt=1)

    assert world.replace("InstanceLost", "instance is gone") is True
    rec = world.rec
    assert (rec.phase, rec.reason, rec.attempt) == (Phase.PENDING, "InstanceLost", 2)
    assert (rec.instance, rec.instance_id, rec.endpoint, rec.launched_at) == ({}, "", "", 0.0)
    assert rec.message == "instance is gone; replacing the instance"
    assert world.ec2.terminated() == [inst["InstanceId"]]


def test_P2_replace_with_restart_policy_never_fails(world: World) -> None:
    inst = world.instance()
    world.seed(Phase.RUNNING, instance=inst, spec=pod(restart_policy="Never"))

    assert world.replace() is False
    rec = world.rec
    assert (rec.phase, rec.reason, rec.attempt) == (Phase.FAILED, "Unhealthy", 0)
    assert world.ec2.terminated() == [inst["InstanceId"]]
    assert [(e.phase, e.event_type) for e in world.events] == [(Phase.FAILED, "Warning")]


@pytest.mark.parametrize(
    ("phase", "deleted"), [(Phase.TERMINATING, False), (Phase.TERMINATED, False), (Phase.RUNNING, True)]
)
def test_P3_replace_leaves_a_pod_being_deleted_alone(world: World, phase: Phase, deleted: bool) -> None:
    world.seed(phase, instance=world.instance(), deleted=deleted)

    assert world.replace() is False
    assert world.rec.phase is phase
    assert world.store.writes == [] and world.ec2.calls == []


@pytest.mark.parametrize("with_instance", [True, False])
def test_F1_fail_terminates_the_instance(world: World, with_instance: bool) -> None:
    inst = world.instance() if with_instance else None
    world.seed(Phase.BOOTING if inst else Phase.PENDING, instance=inst)

    world.fail("ImagePullBackOff", "cannot pull nginx")
    rec = world.rec
    assert (rec.phase, rec.reason, rec.message) == (Phase.FAILED, "ImagePullBackOff", "cannot pull nginx")
    assert world.ec2.terminated() == ([inst["InstanceId"]] if inst else [])
    assert world.events[-1].event_type == "Warning"


def test_a_stale_lock_cannot_write(world: World) -> None:
    """The fence: a task whose lock expired and was taken over cannot overwrite the new owner's work."""
    world.seed(Phase.PROVISIONING, instance=world.instance("running"))
    store: FakeStore = world.store
    with store.locked(UID) as lock:
        rec = store.get(UID)
        assert rec is not None
        store.steal(UID)
        with pytest.raises(StaleFence):
            world.lifecycle.create_step(lock, rec)
    assert world.rec.phase is Phase.PROVISIONING
    assert world.events == []


def test_R2_max_attempts_one_never_retries(make_world: Callable[..., World]) -> None:
    world = make_world(max_attempts=1)
    lose_instance(world)

    world.step()
    assert (world.rec.phase, world.rec.attempt) == (Phase.FAILED, 1)
