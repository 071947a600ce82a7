"""Rows C1 to C17 of the transition table: one create step per test, on the fakes.

Each test seeds the pod record in a phase, programs EC2 and the agent, takes one step under the
pod's lock and checks the phase and reason written, the events in the outbox and the calls made.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.support.fakeagents import app_status
from tests.unit.fleet.world import AGENT_PORT, BOOT_TIMEOUT, NODE, POOL, UID, VISIBILITY, World, pod
from vkec2.contract import AGENT_CONNECTED, INSTANCE_READY, TAG_POD_UID, TAG_POOL, TAG_POOL_STATE
from vkec2.domain.instances import client_token
from vkec2.domain.models import Phase
from vkec2.errors import AgentRejected, AgentUnavailable

ANN = "compute.amazonaws.com/"


def condition(world: World, kind: str) -> str:
    return next(str(c["status"]) for c in world.rec.conditions if c["type"] == kind)


def test_C1_invalid_spec_fails_without_touching_ec2(world: World) -> None:
    world.seed(spec=pod(annotations={f"{ANN}instance-type": "not a type"}))

    assert world.step() is None
    rec = world.rec
    assert (rec.phase, rec.reason) == (Phase.FAILED, "InvalidAnnotation")
    assert world.ec2.calls == []
    assert [(e.phase, e.reason, e.event_type) for e in world.events] == [
        (Phase.FAILED, "InvalidAnnotation", "Warning")
    ]


def test_C2_adopts_the_oldest_tagged_instance_and_terminates_extras(world: World) -> None:
    oldest = world.instance("pending", launch_time="2024-01-01T00:00:00+00:00")
    newer = world.instance("pending", launch_time="2024-01-01T00:05:00+00:00")
    world.seed(attempt=1)  # only a later attempt (or life) looks for what an earlier one left

    assert world.step() is not None
    rec = world.rec
    assert (rec.phase, rec.reason) == (Phase.PROVISIONING, "Adopted")
    assert rec.instance_id == oldest["InstanceId"]
    assert world.ec2.calls_of("TerminateInstances") == [{"InstanceIds": [newer["InstanceId"]]}]
    assert world.ec2.calls_of("RunInstances") == []


def test_C2_adopts_a_running_instance_straight_to_booting(world: World) -> None:
    running = world.instance("running")
    world.agents.serving_default = False
    world.seed(attempt=1)

    world.step()
    rec = world.rec
    assert (rec.phase, rec.reason) == (Phase.BOOTING, "InstanceRunning")
    assert rec.instance_id == running["InstanceId"]
    assert rec.endpoint == f"{running['PrivateIpAddress']}:{AGENT_PORT}"
    assert world.phases() == [Phase.BOOTING]


def test_C2_the_first_attempt_looks_up_nothing(world: World) -> None:
    world.instance("running")  # tagged with the pod's UID, yet the first attempt launched nothing
    world.seed()

    world.step()
    assert world.ec2.calls_of("DescribeInstances") == []
    assert (world.rec.reason, len(world.ec2.calls_of("RunInstances"))) == ("Launched", 1)


def test_C3_claims_a_ready_warm_pool_member(make_world: Callable[..., World]) -> None:
    world = make_world(warm_pools=[{"name": POOL, "desired_count": 1}])
    member = world.ec2.add(state="running", tags={TAG_POOL: POOL, TAG_POOL_STATE: "Ready"})
    world.store.add_ready(POOL, member)
    world.agents.serving_default = False
    world.seed(spec=pod(annotations={f"{ANN}warm-pool": POOL}))

    world.step()
    rec = world.rec
    assert (rec.phase, rec.reason) == (Phase.BOOTING, "InstanceRunning")
    assert rec.instance_id == member["InstanceId"]
    assert "claimed from warm pool" in world.events[0].message
    (tagged,) = world.ec2.calls_of("CreateTags")
    assert tagged["Resources"] == [member["InstanceId"]]
    assert tagged["Tags"][TAG_POD_UID] == UID
    assert tagged["Tags"][TAG_POOL_STATE] == "Claimed"
    assert world.ec2.calls_of("RunInstances") == []


def test_C3_claims_a_pending_member_into_provisioning(make_world: Callable[..., World]) -> None:
    world = make_world(warm_pools=[{"name": POOL, "desired_count": 1}])
    member = world.ec2.add(state="pending", tags={TAG_POOL: POOL})
    world.store.add_ready(POOL, member)
    world.seed(spec=pod(annotations={f"{ANN}warm-pool": POOL}))

    world.step()
    assert (world.rec.phase, world.rec.reason) == (Phase.PROVISIONING, f"Claimed from warm pool {POOL}")


def test_C4_launches_with_client_token(world: World) -> None:
    world.seed(attempt=2)

    assert world.step() is not None
    rec = world.rec
    assert (rec.phase, rec.reason) == (Phase.PROVISIONING, "Launched")
    (run,) = world.ec2.calls_of("RunInstances")
    assert run["ClientToken"] == client_token(UID, 2) == f"vkec2-{UID}-2"
    assert run["Tags"][TAG_POD_UID] == UID
    assert rec.instance_id == world.ec2.tokens[run["ClientToken"]]
    assert rec.launched_at > 0
    assert world.phases() == [Phase.PROVISIONING]


def test_C4_a_repeated_launch_returns_the_same_instance(world: World) -> None:
    world.seed()
    world.step()
    first = world.rec.instance_id
    world.ec2.set_state(first, "terminated")  # invisible to the tag lookup, as before EC2 catches up
    world.seed()

    world.step()
    assert world.rec.instance_id == first
    assert len(world.ec2.instances) == 1


def test_C5_pending_instance_polls_again(world: World) -> None:
    inst = world.instance("pending")
    world.seed(Phase.PROVISIONING, instance=inst)

    delay = world.step()
    assert delay is not None and delay > 0
    assert world.rec.phase is Phase.PROVISIONING
    assert world.store.writes == [] and world.events == []


def test_C6_running_instance_records_the_endpoint(world: World) -> None:
    inst = world.instance("pending")
    world.seed(Phase.PROVISIONING, instance=inst)
    world.ec2.set_state(inst["InstanceId"], "running")
    world.agents.serving_default = False

    assert world.step() is not None
    rec = world.rec
    assert (rec.phase, rec.reason) == (Phase.BOOTING, "InstanceRunning")
    assert rec.endpoint == f"{inst['PrivateIpAddress']}:{AGENT_PORT}"
    assert rec.instance["State"]["Name"] == "running"
    assert condition(world, INSTANCE_READY) == "True"
    assert condition(world, AGENT_CONNECTED) == "False"


@pytest.mark.parametrize("state", ["gone", "shutting-down", "stopping", "stopped"])
def test_C7_lost_instance_retries(world: World, state: str) -> None:
    inst = world.instance("pending")
    # Launched longer ago than EC2's visibility window: NotFound now means gone (C18 is the young case).
    world.seed(Phase.PROVISIONING, instance=inst, launched_at=time.time() - 2 * VISIBILITY)
    if state == "gone":
        del world.ec2.instances[inst["InstanceId"]]
    else:
        world.ec2.set_state(inst["InstanceId"], state)

    assert world.step() is not None
    rec = world.rec
    assert (rec.phase, rec.reason, rec.attempt) == (Phase.PENDING, "InstanceLost", 1)
    assert world.ec2.terminated() == [inst["InstanceId"]]
    assert world.events[-1].event_type == "Warning"


def test_C8_running_without_an_address_retries(world: World) -> None:
    inst = world.instance("pending", private_ip=None)
    world.seed(Phase.PROVISIONING, instance=inst)
    world.ec2.set_state(inst["InstanceId"], "running")

    world.step()
    rec = world.rec
    assert (rec.phase, rec.reason, rec.attempt) == (Phase.PENDING, "NoAgentEndpoint", 1)
    assert world.ec2.terminated() == [inst["InstanceId"]]


def test_C9_silent_agent_within_the_boot_timeout_polls_again(world: World) -> None:
    world.seed(Phase.BOOTING, instance=world.instance())
    world.agents.serving_default = False

    delay = world.step()
    assert delay is not None and delay > 0
    assert world.rec.phase is Phase.BOOTING
    assert world.store.writes == []
    assert world.agents.methods() == ["serving"]


def test_C10_silent_agent_past_the_boot_timeout_retries(world: World) -> None:
    inst = world.instance()
    world.seed(Phase.BOOTING, instance=inst, launched_at=time.time() - BOOT_TIMEOUT - 5)
    world.agents.serving_default = False

    world.step()
    rec = world.rec
    assert (rec.phase, rec.reason, rec.attempt) == (Phase.PENDING, "AgentBootTimeout", 1)
    assert world.ec2.terminated() == [inst["InstanceId"]]


def test_C11_serving_agent_accepts_the_launch(world: World) -> None:
    inst = world.instance()
    world.seed(Phase.BOOTING, instance=inst)
    world.with_bootstrap()

    assert world.step() is not None
    rec = world.rec
    assert (rec.phase, rec.reason) == (Phase.LAUNCHING, "AgentConnected")
    assert world.agents.methods() == ["serving", "bootstrap", "launch"]  # mTLS bootstrap first
    assert world.agents.launched[inst["InstanceId"]]["metadata"]["uid"] == UID
    assert condition(world, AGENT_CONNECTED) == "True"


def test_C12_agent_unavailable_during_launch_polls_again(world: World) -> None:
    inst = world.instance()
    world.seed(Phase.BOOTING, instance=inst)
    world.agents.launch_by[inst["InstanceId"]] = AgentUnavailable("connection reset")

    delay = world.step()
    assert delay is not None and delay > 0
    assert world.rec.phase is Phase.BOOTING
    assert world.store.writes == []
    assert world.ec2.terminated() == []


def test_C13_refused_launch_retries_with_the_agents_reason(world: World) -> None:
    inst = world.instance()
    world.seed(Phase.BOOTING, instance=inst)
    world.agents.launch_by[inst["InstanceId"]] = AgentRejected("bad pod", reason="InvalidPod")

    world.step()
    rec = world.rec
    assert (rec.phase, rec.reason, rec.attempt) == (Phase.PENDING, "InvalidPod", 1)
    assert "agent refused the pod: bad pod" in rec.message
    assert world.ec2.terminated() == [inst["InstanceId"]]


@pytest.mark.parametrize("reported", ["Running", "Succeeded", "Failed"])
def test_C14_reported_phase_ends_the_chain(world: World, reported: str) -> None:
    inst = world.instance()
    world.seed(Phase.LAUNCHING, instance=inst)
    containers = [{"name": "main", "ready": reported == "Running", "restartCount": 0}]
    ready = {"type": "Ready", "status": "True" if reported == "Running" else "False"}
    world.agents.status_by[inst["InstanceId"]] = app_status(
        reported, containers=containers, conditions=[ready]
    )

    assert world.step() is None
    rec = world.rec
    assert rec.phase is Phase(reported)
    assert rec.reason == ("Started" if reported == "Running" else "")
    assert rec.container_statuses == containers
    assert ready in rec.conditions
    (event,) = world.events
    assert event.container_statuses == containers
    assert event.event_type == ("Warning" if reported == "Failed" else "Normal")


def test_C31_a_job_running_just_after_its_launch_is_asked_once_more(world: World) -> None:
    inst = world.instance()
    world.seed(Phase.LAUNCHING, instance=inst, launching_at=time.time(), spec=pod(restart_policy="Never"))

    delay = world.step()
    assert world.rec.phase is Phase.RUNNING
    assert delay is not None and 0 < delay <= 1.0  # at a second after the launch
    world.agents.status_by[inst["InstanceId"]] = app_status("Running")
    assert world.step() is None  # still running: the health sweep watches it from here
    assert world.rec.phase is Phase.RUNNING
    assert world.agents.methods().count("status") == 2


@pytest.mark.parametrize("ended", ["Succeeded", "Failed"])
def test_C32_the_confirming_poll_records_a_short_jobs_end(world: World, ended: str) -> None:
    inst = world.instance()
    world.seed(Phase.LAUNCHING, instance=inst, launching_at=time.time(), spec=pod(restart_policy="OnFailure"))
    assert world.step() is not None
    world.agents.status_by[inst["InstanceId"]] = app_status(
        ended, reason="Completed" if ended == "Succeeded" else "Error"
    )

    world.step()
    assert world.rec.phase is Phase(ended)
    assert world.events[-1].event_type == ("Warning" if ended == "Failed" else "Normal")


def test_C31_an_always_pods_chain_ends_at_running(world: World) -> None:
    inst = world.instance()
    world.seed(Phase.LAUNCHING, instance=inst, launching_at=time.time())

    assert world.step() is None
    assert world.rec.phase is Phase.RUNNING
    assert world.step() is None
    assert world.agents.methods().count("status") == 1


def test_C32_a_running_pods_late_step_asks_nothing(world: World) -> None:
    inst = world.instance()
    world.seed(Phase.RUNNING, instance=inst, launching_at=time.time() - 60)
    world.agents.status_by[inst["InstanceId"]] = app_status("Succeeded")

    assert world.step() is None
    assert world.rec.phase is Phase.RUNNING
    assert "status" not in world.agents.methods()


def test_C15_workload_not_started_polls_again(world: World) -> None:
    inst = world.instance()
    world.seed(Phase.LAUNCHING, instance=inst)
    world.agents.status_by[inst["InstanceId"]] = app_status("Pending")

    delay = world.step()
    assert delay is not None and delay > 0
    assert world.rec.phase is Phase.LAUNCHING
    assert world.store.writes == []


def test_C16_agent_lost_past_the_boot_timeout_retries(world: World) -> None:
    inst = world.instance()
    world.seed(Phase.LAUNCHING, instance=inst, launched_at=time.time() - BOOT_TIMEOUT - 5)
    world.agents.status_by[inst["InstanceId"]] = AgentUnavailable("deadline exceeded")

    world.step()
    rec = world.rec
    assert (rec.phase, rec.reason, rec.attempt) == (Phase.PENDING, "AgentLost", 1)
    assert world.ec2.terminated() == [inst["InstanceId"]]


def test_C16_agent_silent_within_the_boot_timeout_polls_again(world: World) -> None:
    inst = world.instance()
    world.seed(Phase.LAUNCHING, instance=inst)
    world.agents.status_by[inst["InstanceId"]] = AgentUnavailable("deadline exceeded")

    assert world.step() is not None
    assert world.rec.phase is Phase.LAUNCHING
    assert world.store.writes == []


@pytest.mark.parametrize(
    ("phase", "deleted"),
    [
        (Phase.PENDING, True),
        (Phase.BOOTING, True),
        (Phase.RUNNING, False),
        (Phase.SUCCEEDED, False),  # restartPolicy Always: nothing to release (row E1)
        (Phase.TERMINATED, False),
    ],
)
def test_C17_deleted_or_past_creating_stops_the_chain(world: World, phase: Phase, deleted: bool) -> None:
    world.seed(phase, instance=world.instance(), deleted=deleted)

    assert world.step() is None
    assert world.rec.phase is phase
    assert world.store.writes == [] and world.ec2.calls == [] and world.agents.calls == []


def test_C_events_go_to_the_pods_node_outbox(world: World) -> None:
    world.seed()
    world.step()
    assert set(world.store.outbox) == {NODE}
