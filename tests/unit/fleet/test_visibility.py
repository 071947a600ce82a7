"""Rows C18 to C23, R3 and R4: exactly one instance on an eventually consistent, slow EC2, on the fakes.

EC2 may not know an instance for seconds after RunInstances (the fakes hide it until revealed), a
step may stop half-way (a worker killed after a side effect, before its phase write), and a call
may be so slow that the pod's lock expires and another task takes the pod over in the middle of it
(a hook of the fake EC2 steals the lock and runs the other task's step while the call "hangs").
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.unit.fleet.world import NODE, POOL, UID, VISIBILITY, World, pod
from vkec2.contract import TAG_POD_UID, TAG_POOL, TAG_POOL_STATE
from vkec2.domain.instances import client_token
from vkec2.domain.models import Phase
from vkec2.domain.podspec import launch_params
from vkec2.errors import AgentIdentityMismatch, AgentRejected, Ec2Error, StaleFence

ANN = "compute.amazonaws.com/"


def pool_world(make_world: Callable[..., World], members: int = 2) -> World:
    world = make_world(warm_pools=[{"name": POOL, "desired_count": members}])
    for _ in range(members):
        member = world.ec2.add(state="running", tags={TAG_POOL: POOL, TAG_POOL_STATE: "Ready"})
        world.store.add_ready(POOL, member)
    world.agents.serving_default = False
    world.seed(spec=pod(annotations={f"{ANN}warm-pool": POOL}))
    return world


def test_C18_an_instance_ec2_does_not_know_yet_is_pending_not_gone(world: World) -> None:
    world.ec2.launch_hidden = True
    world.agents.serving_default = False
    world.seed()
    world.step()  # Pending -> Provisioning: launched, but EC2 does not show it yet
    launched = world.rec.instance_id

    for _ in range(3):
        assert world.step() is not None
    rec = world.rec
    assert (rec.phase, rec.attempt, rec.instance_id) == (Phase.PROVISIONING, 0, launched)
    assert world.ec2.terminated() == [] and len(world.ec2.calls_of("RunInstances")) == 1

    world.ec2.reveal()
    world.ec2.set_state(launched, "running")
    world.step()
    assert (world.rec.phase, world.rec.instance_id) == (Phase.BOOTING, launched)


def test_C18_past_the_window_a_missing_instance_is_lost(world: World) -> None:
    inst = world.instance("pending")
    world.ec2.hidden.add(inst["InstanceId"])
    world.seed(Phase.PROVISIONING, instance=inst, launched_at=time.time() - VISIBILITY - 1)

    world.step()
    assert (world.rec.phase, world.rec.reason, world.rec.attempt) == (Phase.PENDING, "InstanceLost", 1)


def test_C19_a_recorded_launch_intent_resends_run_instances_with_the_same_token(world: World) -> None:
    world.ec2.launch_hidden = True  # the launch happened, but neither ID nor tag listing shows it
    token = client_token(UID, 0)
    # A first step recorded its intent, sent RunInstances and died before recording the instance.
    first = world.ec2.run_instance(
        launch_params(world.settings, pod()), world.ec2.pod_tags(pod(), NODE), token
    )
    world.seed(launch_token=token)

    world.step()
    rec = world.rec
    assert (rec.phase, rec.reason, rec.instance_id) == (Phase.PROVISIONING, "Launched", first["InstanceId"])
    assert [c["ClientToken"] for c in world.ec2.calls_of("RunInstances")] == [token, token]
    assert len(world.ec2.instances) == 1
    assert ("DescribeInstances", {"pod_uid": UID}) not in world.ec2.calls  # no tag lookup first


def test_C20_a_recorded_instance_is_carried_on_not_launched_again(world: World) -> None:
    inst = world.instance("pending")
    world.seed(launch_token=client_token(UID, 0), instance=inst)

    assert world.step() is not None
    rec = world.rec
    assert (rec.phase, rec.reason, rec.instance_id) == (Phase.PROVISIONING, "Recovered", inst["InstanceId"])
    assert world.ec2.calls_of("RunInstances") == [] and world.ec2.calls_of("CreateTags") == []


def test_C20_a_claimed_member_is_tagged_again_not_claimed_twice(make_world: Callable[..., World]) -> None:
    world = pool_world(make_world)
    # The claim's step recorded the member, then died before tagging it.
    member_id, member = world.store.ready[POOL].pop(0)
    world.seed(spec=pod(annotations={f"{ANN}warm-pool": POOL}), instance=member)

    world.step()
    assert (world.rec.phase, world.rec.instance_id) == (Phase.BOOTING, member_id)
    (tagged,) = world.ec2.calls_of("CreateTags")
    assert tagged["Resources"] == [member_id] and tagged["Tags"][TAG_POD_UID] == UID
    assert len(world.store.ready[POOL]) == 1  # the other member is still there


def test_C21_a_lock_lost_before_run_instances_launches_nothing(world: World) -> None:
    world.seed(attempt=1)  # a later attempt looks up what an earlier one may have left

    def another_task_takes_over() -> None:  # the tag lookup was slow; the lock expired meanwhile
        world.store.steal(UID)

    world.ec2.hooks["DescribeInstances"] = another_task_takes_over
    with pytest.raises(StaleFence):
        world.step()
    assert world.ec2.calls_of("RunInstances") == []


def test_C21_a_slow_run_instances_with_the_lock_stolen_gives_one_instance(world: World) -> None:
    world.seed()
    outcome: list[float | None] = []

    def slow_call() -> None:  # RunInstances hangs past the lock TTL; another create takes over
        world.store.steal(UID)
        outcome.append(world.step())

    world.ec2.hooks["RunInstances"] = slow_call
    with pytest.raises(StaleFence):
        world.step()
    assert outcome and outcome[0] is not None
    assert len(world.ec2.instances) == 1
    tokens = {c["ClientToken"] for c in world.ec2.calls_of("RunInstances")}
    assert tokens == {client_token(UID, 0)}
    assert world.rec.phase is Phase.PROVISIONING


def test_C21_a_slow_claim_tagging_with_the_lock_stolen_claims_one_member(
    make_world: Callable[..., World],
) -> None:
    world = pool_world(make_world)

    def slow_call() -> None:  # CreateTags hangs past the lock TTL; another create takes over
        world.store.steal(UID)
        world.step()

    world.ec2.hooks["CreateTags"] = slow_call
    with pytest.raises(StaleFence):
        world.step()
    assert len(world.store.ready[POOL]) == 1, "a second member was claimed"
    claimed = {iid for c in world.ec2.calls_of("CreateTags") for iid in c["Resources"]}
    assert claimed == {world.rec.instance_id}
    assert world.rec.phase is Phase.BOOTING


def test_C21_every_side_effect_is_preceded_by_the_guard(make_world: Callable[..., World]) -> None:
    world = pool_world(make_world, members=1)
    guards: list[int] = []
    world.ec2.hooks["CreateTags"] = lambda: guards.append(world.store.holder(UID).guards)  # type: ignore[union-attr]
    world.step()
    assert guards == [2]  # one before the claim, one before CreateTags


def test_C22_an_agent_refusing_the_status_check_retries(world: World) -> None:
    inst = world.instance("running")
    world.seed(Phase.LAUNCHING, instance=inst)
    world.agents.status_by[inst["InstanceId"]] = AgentIdentityMismatch("another instance's agent")

    world.step()
    rec = world.rec
    assert (rec.phase, rec.reason, rec.attempt) == (Phase.PENDING, "AgentIdentityMismatch", 1)
    assert world.ec2.terminated() == [inst["InstanceId"]]


def test_C23_idempotent_parameter_mismatch_starts_a_fresh_attempt(world: World) -> None:
    world.seed()
    world.ec2.errors["RunInstances"] = Ec2Error(
        "RunInstances: IdempotentParameterMismatch: token reused", code="IdempotentParameterMismatch"
    )

    assert world.step() is not None
    rec = world.rec
    assert (rec.phase, rec.reason, rec.attempt) == (Phase.PENDING, "IdempotentParameterMismatch", 1)


def test_R3_an_abandoned_attempt_terminates_every_instance_tagged_with_the_pod(world: World) -> None:
    recorded = world.instance("running")
    stray = world.instance("pending")  # e.g. launched by a stale step, listed by tag only
    world.seed(Phase.LAUNCHING, instance=recorded)
    world.agents.status_by[recorded["InstanceId"]] = AgentRejected("workload unknown")

    world.step()
    assert world.rec.phase is Phase.PENDING
    assert sorted(world.ec2.terminated()) == sorted([recorded["InstanceId"], stray["InstanceId"]])


def test_R3_fail_and_replace_terminate_every_tagged_instance(world: World) -> None:
    recorded = world.instance("running")
    stray = world.instance("running")
    world.seed(Phase.RUNNING, instance=recorded)

    world.replace()
    assert sorted(world.ec2.terminated()) == sorted([recorded["InstanceId"], stray["InstanceId"]])
    world.fail()
    assert world.rec.phase is Phase.FAILED


def test_R4_terminate_of_an_instance_ec2_does_not_know_yet_is_retried(world: World) -> None:
    inst = world.instance("pending")
    world.ec2.hidden.add(inst["InstanceId"])
    world.seed(Phase.PROVISIONING, instance=inst)

    with pytest.raises(Ec2Error) as err:
        world.fail()
    assert err.value.retryable and err.value.reason == "InstanceNotYetVisible"
    assert world.rec.phase is Phase.PROVISIONING  # nothing recorded: the step runs again later

    world.ec2.reveal()
    world.fail()
    after = world.rec
    assert after.phase is Phase.FAILED and world.ec2.state(inst["InstanceId"]) == "terminated"


def test_R4_past_the_window_not_found_counts_as_terminated(world: World) -> None:
    inst = world.instance("pending")
    del world.ec2.instances[inst["InstanceId"]]
    world.seed(Phase.PROVISIONING, instance=inst, launched_at=time.time() - VISIBILITY - 1)

    world.fail()
    assert world.rec.phase is Phase.FAILED
