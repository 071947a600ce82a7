"""Rows U1 to U3 (update in place) and D1 to D5 (delete) of the transition table."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.unit.fleet.world import IMAGE, UID, World, pod
from vkec2.contract import TAG_POD_UID
from vkec2.domain.instances import Instance, client_token, tag_map
from vkec2.domain.models import Phase
from vkec2.errors import AgentError, AgentRejected, AgentUnavailable, Ec2Error

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


def test_U4_changed_sealed_content_goes_to_the_agent_an_unreachable_one_retries(world: World) -> None:
    spec = {**pod(), "vkec2Resolved": {"sealed": "token", "digest": "d"}}
    inst = running_with_tags(world, {}, spec=spec)
    world.update()
    assert ("update_volumes", inst["InstanceId"]) in world.agents.calls
    world.agents.update_by[inst["InstanceId"]] = AgentRejected("no such pod")
    world.update()  # refused: logged, the pod keeps running with its files
    assert world.rec.phase is Phase.RUNNING
    world.agents.update_by[inst["InstanceId"]] = AgentUnavailable("down")
    with pytest.raises(AgentUnavailable):  # retryable: the task tries the step again
        world.update()


def test_U4_a_pod_without_sealed_content_sends_no_update(world: World) -> None:
    running_with_tags(world, {}, spec=pod())
    world.update()
    assert "update_volumes" not in world.agents.methods()


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


def test_D1_delete_asks_the_workload_to_stop_and_returns_at_once(world: World) -> None:
    inst = world.instance()
    world.seed(Phase.RUNNING, instance=inst, deleted=True)

    before = time.time()
    delay = world.delete()
    rec = world.rec
    assert delay is not None and 0 < delay <= 1.0
    assert (rec.phase, rec.reason) == (Phase.TERMINATING, "Killing")
    assert world.agents.grace == {inst["InstanceId"]: 7}  # terminationGracePeriodSeconds
    assert world.agents.waited == {inst["InstanceId"]: False}  # the agent answers at once
    assert before + 7 <= rec.grace_deadline <= time.time() + 7
    assert world.ec2.calls_of("TerminateInstances") == []


def test_D1_delete_never_extends_the_lock_for_the_grace_period(world: World) -> None:
    world.seed(Phase.RUNNING, instance=world.instance(), deleted=True)
    with world.store.locked(UID) as lock:
        rec = world.store.get(UID)
        assert rec is not None
        world.lifecycle.delete(lock, rec)
        assert lock.extensions == []


@pytest.mark.parametrize(
    ("requested", "spec_grace", "expected"),
    [(2, 7, 2), (None, 7, 7), (None, None, 30), (1e16, 7, 3600), (None, 1e16, 3600), (-5, 7, 0)],
)
def test_D1_the_grace_period_is_the_deletes_else_the_pods_capped(
    make_world: Any, requested: float | None, spec_grace: float | None, expected: int
) -> None:
    world = make_world()
    spec = pod()
    if spec_grace is None:
        del spec["spec"]["terminationGracePeriodSeconds"]
    else:
        spec["spec"]["terminationGracePeriodSeconds"] = spec_grace
    inst = world.instance()
    world.seed(Phase.RUNNING, instance=inst, spec=spec, deleted=True, deletion_grace=requested)

    world.delete()
    assert world.agents.grace == {inst["InstanceId"]: expected}
    assert world.rec.grace_deadline <= time.time() + 3600
    if expected == 0:  # no grace: the instance goes at once
        assert world.rec.phase is Phase.TERMINATED


def test_D1_the_cap_is_configurable(make_world: Any) -> None:
    world = make_world(agent={"endpoint": "private-ip", "port": 7443, "max_grace_seconds": 5})
    inst = world.instance()
    world.seed(Phase.RUNNING, instance=inst, deleted=True)

    world.delete()
    assert world.agents.grace == {inst["InstanceId"]: 5}


@pytest.mark.parametrize("error", [AgentUnavailable("gone"), AgentRejected("no workload")])
def test_D1_a_failing_agent_does_not_block_the_delete(world: World, error: AgentError) -> None:
    inst = world.instance()
    world.seed(Phase.RUNNING, instance=inst, deleted=True)
    world.agents.terminate_by[inst["InstanceId"]] = error

    assert world.delete() is None
    assert world.rec.phase is Phase.TERMINATED
    assert world.phases() == [Phase.TERMINATING, Phase.TERMINATED]
    assert world.ec2.terminated() == [inst["InstanceId"]]


@pytest.mark.parametrize("phase", [Phase.SUCCEEDED, Phase.FAILED])
def test_D1_a_finished_workload_is_not_asked_to_stop(world: World, phase: Phase) -> None:
    inst = world.instance()
    world.seed(phase, instance=inst, deleted=True)

    assert world.delete() is None
    assert world.agents.calls == []
    assert world.rec.phase is Phase.TERMINATED
    assert world.ec2.terminated() == [inst["InstanceId"]]


def test_D1_delete_without_a_recorded_instance_terminates_by_tag(world: World) -> None:
    inst = world.instance("pending")
    # Killed between RunInstances (its intent recorded first) and recording the instance.
    world.seed(Phase.PENDING, deleted=True, launch_token=client_token(UID, 0))

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

    assert world.delete() is not None  # the workload is asked to stop; nothing reported yet
    assert world.rec.grace_deadline > 0
    assert world.delete() is None
    assert world.phases() == [Phase.TERMINATED]


def test_D4_a_workload_that_ignores_sigterm_is_polled_within_the_grace_period(world: World) -> None:
    inst = world.instance()
    world.seed(Phase.RUNNING, instance=inst, deleted=True)
    world.agents.stubborn.add(inst["InstanceId"])

    world.delete()
    for _ in range(3):
        delay = world.delete()
        assert delay is not None and 0 < delay <= 7
    assert world.rec.phase is Phase.TERMINATING
    assert world.ec2.calls_of("TerminateInstances") == []
    assert world.agents.methods().count("terminate") == 1


def test_D4_an_unreachable_agent_is_polled_until_the_deadline(world: World) -> None:
    inst = world.instance()
    world.seed(Phase.RUNNING, instance=inst, deleted=True)
    world.delete()
    world.agents.status_by[inst["InstanceId"]] = AgentUnavailable("blip")

    assert world.delete() is not None
    assert world.rec.phase is Phase.TERMINATING


def test_D5_the_instance_is_terminated_once_the_workload_is_gone(world: World) -> None:
    inst = world.instance()
    world.seed(Phase.RUNNING, instance=inst, deleted=True)

    world.delete()
    assert world.delete() is None
    rec = world.rec
    assert (rec.phase, rec.reason) == (Phase.TERMINATED, "Terminated")
    assert "the workload stopped" in rec.message
    assert world.phases() == [Phase.TERMINATING, Phase.TERMINATED]
    assert world.ec2.calls_of("TerminateInstances") == [{"InstanceIds": [inst["InstanceId"]]}]
    assert world.ec2.state(inst["InstanceId"]) == "terminated"


def test_D5_a_delete_seconds_after_the_launch_waits_until_ec2_knows_the_instance(world: World) -> None:
    inst = world.instance("pending")
    world.seed(Phase.PROVISIONING, instance=inst, deleted=True)  # launched just now, not seen running
    world.ec2.hidden.add(inst["InstanceId"])  # EC2 answers NotFound for it for a while

    with pytest.raises(Ec2Error) as err:  # the task retries it: never "terminated" while unseen
        world.delete()
    assert err.value.retryable and world.rec.phase is Phase.TERMINATING
    world.ec2.reveal()
    assert world.delete() is None
    assert world.phases()[-1] is Phase.TERMINATED
    assert world.ec2.state(inst["InstanceId"]) == "terminated"


def test_D5_the_instance_is_terminated_when_the_grace_period_is_over(world: World) -> None:
    inst = world.instance()
    world.seed(Phase.RUNNING, instance=inst, deleted=True)
    world.agents.stubborn.add(inst["InstanceId"])
    world.delete()
    world.set(grace_deadline=time.time() - 1)

    assert world.delete() is None
    assert world.rec.phase is Phase.TERMINATED
    assert "grace period is over" in world.rec.message
    assert world.ec2.terminated() == [inst["InstanceId"]]


def test_D5_an_agent_that_refuses_to_report_ends_the_wait(world: World) -> None:
    inst = world.instance()
    world.seed(Phase.RUNNING, instance=inst, deleted=True)
    world.delete()
    world.agents.status_by[inst["InstanceId"]] = AgentRejected("permission denied")

    assert world.delete() is None
    assert world.rec.phase is Phase.TERMINATED


def test_D2_a_stale_delete_of_a_pod_desired_again_is_ignored(world: World) -> None:
    world.seed(Phase.RUNNING, instance=world.instance(), generation=3, deleted=False)

    world.delete(generation=2)
    assert world.rec.phase is Phase.RUNNING
    assert world.store.writes == [] and world.ec2.calls == [] and world.agents.calls == []


def test_D2_a_delete_of_the_current_generation_proceeds(world: World) -> None:
    world.seed(Phase.RUNNING, instance=world.instance(), generation=3, deleted=True)

    world.delete(generation=2)
    assert world.rec.phase is Phase.TERMINATING
    assert world.delete(generation=2) is None  # a continuation carries the delete's generation
    assert world.phases()[-1] is Phase.TERMINATED


def test_D3_deleting_a_terminated_pod_does_nothing(world: World) -> None:
    world.seed(Phase.TERMINATED, instance=world.instance("terminated"), deleted=True)

    world.delete()
    assert world.store.writes == [] and world.ec2.calls == [] and world.agents.calls == []
