"""Row C27: a record the producer re-created after Redis lost its data (vkec2/fleet/rebuild.py).

The rebuilt record starts at Pending, attempt 0, flagged ``rebuilt``; EC2 still knows every instance
the pod launched, terminated ones too, each with its ClientToken.
"""

from __future__ import annotations

from tests.support.fakeagents import app_status
from tests.unit.fleet.world import UID, World
from vkec2.domain.instances import client_token
from vkec2.domain.models import Phase
from vkec2.errors import AgentUnavailable


def sent_tokens(world: World) -> list[str]:
    return [str(args["ClientToken"]) for args in world.ec2.calls_of("RunInstances")]


def test_C27_attempt_follows_the_highest_token_including_terminated_instances(world: World) -> None:
    world.instance("terminated", client_token=client_token(UID, 0))
    world.instance("terminated", client_token=client_token(UID, 2, "0a1b2c3d"))
    world.instance("shutting-down", client_token=client_token(UID, 1))
    world.seed(Phase.PENDING, rebuilt=True)
    world.step()
    rec = world.rec
    assert rec.attempt == 3 and not rec.rebuilt
    assert sent_tokens(world) == [client_token(UID, 3)]  # never a token EC2 already answered
    assert rec.phase is Phase.PROVISIONING and rec.instance_id not in world.ec2.terminated()


def test_C27_nothing_ever_launched_starts_at_attempt_zero(world: World) -> None:
    world.seed(Phase.PENDING, rebuilt=True)
    world.step()
    assert world.rec.attempt == 0
    assert sent_tokens(world) == [client_token(UID, 0)]


def test_C27_adopts_the_oldest_live_instance_and_terminates_the_others(world: World) -> None:
    world.agents.serving_default = False  # its agent does not answer yet: the normal adopt path
    world.agents.status_default = AgentUnavailable("not yet")
    old = world.instance(
        "running", client_token=client_token(UID, 1), launch_time="2024-01-01T00:00:01+00:00"
    )
    new = world.instance(
        "pending", client_token=client_token(UID, 2), launch_time="2024-01-01T00:00:09+00:00"
    )
    world.seed(Phase.PENDING, rebuilt=True)
    world.step()
    rec = world.rec
    assert rec.instance_id == old["InstanceId"] and rec.attempt == 3
    assert world.ec2.terminated() == [new["InstanceId"]]
    assert rec.phase is Phase.BOOTING and not sent_tokens(world)


def test_C27_a_running_pod_stays_running(world: World) -> None:
    inst = world.instance("running", client_token=client_token(UID, 0))
    world.agents.status_by[inst["InstanceId"]] = app_status("Running")
    world.seed(Phase.PENDING, rebuilt=True)
    delay = world.step()
    rec = world.rec
    assert rec.phase is Phase.RUNNING and delay is None
    assert rec.instance_id == inst["InstanceId"] and rec.endpoint and rec.container_statuses
    assert rec.attempt == 1 and not rec.rebuilt
    assert world.phases() == [Phase.RUNNING]  # Kubernetes never hears Pending, Provisioning or Booting
    assert "launch" not in world.agents.methods() and not sent_tokens(world)


def test_C27_a_record_not_rebuilt_never_looks_up_terminated_instances(world: World) -> None:
    world.instance("terminated", client_token=client_token(UID, 0))
    world.seed(Phase.PENDING)
    world.step()
    assert all(args.get("states") != "any" for args in world.ec2.calls_of("DescribeInstances"))
    assert sent_tokens(world) == [client_token(UID, 0)]  # (the case C27 exists for)
