"""Rows U1 to U3 (update in place) and D1 to D3 (delete) of the transition table."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.unit.fleet.world import IMAGE, UID, World, pod
from vkec2.contract import TAG_POD_UID
from vkec2.domain.instances import Instance, tag_map
from vkec2.domain.models import Phase
from vkec2.errors import AgentError, AgentRejected, AgentUnavailable

ANN = "compute.amazonaws.com/"


def running_with_tags(world: World, tags: dict[str, str], spec: dict[str, Any]) -> Instance:
    inst = world.instance(tags=tags, image_id=IMAGE, instance_type="m5.large")
    world.seed(Phase.RUNNING, instance=inst, spec=spec)
    return inst


def test_U1_changed_tags_are_written_in_place(world: World) -> None:
    inst = running_with_tags(
        world,
        {"team": "a", "env": "prod"},
        spec=pod(annotations={f"{ANN}tags": json.dumps({"team": "b", "env": "prod"})}),
    )

    world.update()
    rec = world.rec
    assert (rec.phase, rec.reason) == (Phase.RUNNING, "Updated")
    assert world.ec2.calls_of("CreateTags") == [{"Resources": [inst["InstanceId"]], "Tags": {"team": "b"}}]
    assert tag_map(rec.instance)["team"] == "b"
    assert tag_map(rec.instance)[TAG_POD_UID] == UID
    assert [(e.phase, e.reason) for e in world.events] == [(Phase.RUNNING, "Updated")]


def test_U1_unchanged_tags_write_nothing(world: World) -> None:
    running_with_tags(world, {"team": "a"}, spec=pod(annotations={f"{ANN}tags": json.dumps({"team": "a"})}))

    world.update()
    assert world.ec2.calls == [] and world.store.writes == []


@pytest.mark.parametrize(
    ("annotation", "value", "what"),
    [("image-id", "ami-0fedcba9876543210", "image-id"), ("instance-type", "c5.xlarge", "instance-type")],
)
def test_U2_image_or_type_change_asks_for_a_replacement(
    world: World, annotation: str, value: str, what: str
) -> None:
    running_with_tags(world, {}, spec=pod(annotations={f"{ANN}{annotation}": value}))

    world.update()
    rec = world.rec
    assert (rec.phase, rec.reason) == (Phase.RUNNING, "ReplacementNeeded")
    assert what in rec.message
    assert world.ec2.calls == []
    assert world.events[-1].event_type == "Warning"


def test_U3_invalid_spec_is_reported_without_a_change(world: World) -> None:
    running_with_tags(world, {}, spec=pod(annotations={f"{ANN}tags": "not json"}))

    world.update()
    rec = world.rec
    assert (rec.phase, rec.reason) == (Phase.RUNNING, "InvalidAnnotation")
    assert world.ec2.calls == []
    assert world.events[-1].event_type == "Warning"


@pytest.mark.parametrize("phase", [Phase.PENDING, Phase.SUCCEEDED])
def test_U_update_without_an_instance_or_when_final_does_nothing(world: World, phase: Phase) -> None:
    world.seed(phase, instance=world.instance() if phase.final else None)

    world.update()
    assert world.store.writes == [] and world.ec2.calls == []


def test_D1_delete_stops_the_workload_then_terminates(world: World) -> None:
    inst = world.instance()
    world.seed(Phase.RUNNING, instance=inst, deleted=True)

    world.delete()
    rec = world.rec
    assert (rec.phase, rec.reason) == (Phase.TERMINATED, "Terminated")
    assert world.phases() == [Phase.TERMINATING, Phase.TERMINATED]
    assert world.agents.grace == {inst["InstanceId"]: 7}  # terminationGracePeriodSeconds
    assert world.ec2.calls_of("TerminateInstances") == [{"InstanceIds": [inst["InstanceId"]]}]
    assert world.ec2.state(inst["InstanceId"]) == "terminated"


def test_D1_delete_holds_the_lock_through_the_grace_period(world: World) -> None:
    world.seed(Phase.RUNNING, instance=world.instance(), deleted=True)
    extended: list[int] = []
    with world.store.locked(UID) as lock:
        rec = world.store.get(UID)
        assert rec is not None
        world.lifecycle.delete(lock, rec)
        extended = lock.extensions
    timeout = world.settings.agent.call_timeout_seconds
    assert extended == [lock.ttl_ms + int((7 + timeout) * 1000)]


@pytest.mark.parametrize("error", [AgentUnavailable("gone"), AgentRejected("no workload")])
def test_D1_a_failing_agent_does_not_block_the_delete(world: World, error: AgentError) -> None:
    inst = world.instance()
    world.seed(Phase.RUNNING, instance=inst, deleted=True)
    world.agents.terminate_by[inst["InstanceId"]] = error

    world.delete()
    assert world.rec.phase is Phase.TERMINATED
    assert world.ec2.terminated() == [inst["InstanceId"]]


def test_D1_delete_without_a_recorded_instance_terminates_by_tag(world: World) -> None:
    inst = world.instance("pending")
    world.seed(Phase.PENDING, deleted=True)  # killed between RunInstances and the state write

    world.delete()
    rec = world.rec
    assert rec.phase is Phase.TERMINATED
    assert world.ec2.terminated() == [inst["InstanceId"]]
    assert world.agents.calls == []
    assert inst["InstanceId"] in rec.message


def test_D1_delete_with_nothing_to_terminate(world: World) -> None:
    world.seed(Phase.PENDING, deleted=True)

    world.delete()
    assert (world.rec.phase, world.rec.message) == (Phase.TERMINATED, "no instance to terminate")
    assert world.ec2.calls_of("TerminateInstances") == []


def test_D1_a_terminating_pod_is_not_reported_terminating_twice(world: World) -> None:
    world.seed(Phase.TERMINATING, instance=world.instance(), deleted=True)

    world.delete()
    assert world.phases() == [Phase.TERMINATED]


def test_D2_a_stale_delete_of_a_pod_desired_again_is_ignored(world: World) -> None:
    world.seed(Phase.RUNNING, instance=world.instance(), generation=3, deleted=False)

    world.delete(generation=2)
    assert world.rec.phase is Phase.RUNNING
    assert world.store.writes == [] and world.ec2.calls == [] and world.agents.calls == []


def test_D2_a_delete_of_the_current_generation_proceeds(world: World) -> None:
    world.seed(Phase.RUNNING, instance=world.instance(), generation=3, deleted=True)

    world.delete(generation=2)
    assert world.rec.phase is Phase.TERMINATED


def test_D3_deleting_a_terminated_pod_does_nothing(world: World) -> None:
    world.seed(Phase.TERMINATED, instance=world.instance("terminated"), deleted=True)

    world.delete()
    assert world.store.writes == [] and world.ec2.calls == [] and world.agents.calls == []
