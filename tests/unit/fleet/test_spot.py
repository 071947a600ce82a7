"""Spot on the fakes: the candidates and their marks, the health sweep's interruption and notice rules.

The create step tries a ``spot-or-on-demand`` pod's every (type, zone) as Spot, then as on-demand;
a Spot refusal marks only the Spot offering; each candidate has its own ClientToken. The health
sweep reports an instance EC2 interrupted (``InstanceLifecycle: spot`` with a Spot state reason)
as ``SpotInterrupted`` through the ordinary lost-instance remediation (Failed for Never, replaced
otherwise; the orphan GC's path too), and marks a pod whose agent reports a notice once, without
replacing it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import pytest

from tests.support.fakeagents import app_status
from tests.unit.fleet.test_sweep import Sweeper
from tests.unit.fleet.world import UID, World, pod
from vkec2.contract import (
    ON_DEMAND,
    POD_CREATE,
    SPOT,
    SPOT_INTERRUPTED,
    SPOT_INTERRUPTION_NOTICE,
    SPOT_NOTICE_CLEARED_REASON,
    SPOT_NOTICE_REASON,
    SPOT_OR_ON_DEMAND,
    SPOT_REBALANCE_REASON,
)
from vkec2.domain.agents import SpotNotice
from vkec2.domain.instances import Instance, client_token
from vkec2.domain.models import Phase
from vkec2.domain.podspec import LaunchParams, launch_params
from vkec2.errors import Ec2Error
from vkec2.fleet.capacity import candidates
from vkec2.fleet.sweep import remediate_lost

ICE = "InsufficientInstanceCapacity"
SUBNETS = ["subnet-0a", "subnet-0b"]


def spot_world(make_world: Callable[..., World], capacity_type: str = SPOT_OR_ON_DEMAND) -> World:
    ec2 = {"image_id": "ami-0123456789abcdef0", "subnets": SUBNETS, "capacity_type": capacity_type}
    world = make_world(ec2=ec2)
    world.ec2.zones = {"subnet-0a": "az-a", "subnet-0b": "az-b"}
    return world


def refuse_spot(world: World, code: str = ICE) -> None:
    """EC2 has no Spot capacity at all (on-demand launches as usual)."""
    run = world.ec2.run_instance

    def run_instance(params: LaunchParams, tags: Mapping[str, str], token: str) -> Instance:
        if params.capacity_type == SPOT:
            world.ec2.calls.append(("RunInstances", {"ClientToken": token, "CapacityType": SPOT}))
            raise Ec2Error(f"RunInstances: {code}: no Spot capacity", code=code, capacity=True)
        return run(params, tags, token)

    setattr(world.ec2, "run_instance", run_instance)  # noqa: B010 (a method of the fake, replaced)


def test_spot_or_on_demand_tries_every_offering_as_spot_before_any_as_on_demand(
    make_world: Callable[..., World],
) -> None:
    world = spot_world(make_world)
    params = replace(launch_params(world.settings, pod()), fallback_types=("m5a.large",))
    cands = candidates(world.settings, params, UID, 0, world.ec2.zones)

    markets = [c.params.capacity_type for c in cands]
    assert markets == [SPOT] * 4 + [ON_DEMAND] * 4
    assert [c.params.instance_type for c in cands[:4]] == [c.params.instance_type for c in cands[4:]]
    assert cands[0].token == client_token(UID, 0)  # the pod's own parameters keep the plain token
    assert len({c.token for c in cands}) == len(cands)  # Spot and on-demand of one offering differ
    assert len({c.offering for c in cands}) == len(cands)
    assert cands[0].offering[1].endswith("/spot") and not cands[4].offering[1].endswith("/spot")


def test_an_on_demand_pod_keeps_its_candidates_and_tokens(make_world: Callable[..., World]) -> None:
    world = spot_world(make_world, ON_DEMAND)
    cands = candidates(world.settings, launch_params(world.settings, pod()), UID, 2, world.ec2.zones)
    assert [c.params.capacity_type for c in cands] == [ON_DEMAND, ON_DEMAND]
    assert cands[0].token == client_token(UID, 2)
    assert [c.offering[1] for c in cands] == ["az-a", "az-b"] or [c.offering[1] for c in cands] == [
        "az-b",
        "az-a",
    ]


def test_no_spot_capacity_marks_spot_only_and_launches_on_demand(make_world: Callable[..., World]) -> None:
    world = spot_world(make_world)
    refuse_spot(world)
    world.seed()

    world.step()
    world.step()
    assert world.rec.phase is Phase.PROVISIONING
    tried = [c["CapacityType"] for c in world.ec2.calls_of("RunInstances")]
    assert tried == [SPOT, SPOT, ON_DEMAND]
    assert set(world.store.marks) == {("m5.large", "az-a/spot"), ("m5.large", "az-b/spot")}
    assert len(world.ec2.instances) == 1


def test_a_spot_pod_without_spot_capacity_waits_pending(make_world: Callable[..., World]) -> None:
    world = spot_world(make_world, SPOT)
    refuse_spot(world, "SpotMaxPriceTooLow")
    world.seed()

    world.step()
    rec = world.rec
    assert (rec.phase, rec.reason) == (Phase.PENDING, "InsufficientCapacity")
    assert "SpotMaxPriceTooLow" in rec.message and "m5.large (spot) in az-" in rec.message
    assert not world.ec2.instances


# -- the health sweep ------------------------------------------------------------------------


def interrupt(world: World, instance: Instance, state: str = "shutting-down") -> None:
    """What DescribeInstances shows of a Spot instance EC2 interrupted."""
    described = world.ec2.instances[instance["InstanceId"]]
    described["State"] = {"Name": state}
    described["InstanceLifecycle"] = "spot"
    described["StateReason"] = {
        "Code": "Server.SpotInstanceTermination",
        "Message": "Server.SpotInstanceTermination: Spot instance termination",
    }


@pytest.fixture
def sweeper(world: World) -> Sweeper:
    return Sweeper(world)


def test_an_interrupted_spot_pod_that_never_restarts_fails_spot_interrupted(sweeper: Sweeper) -> None:
    inst = sweeper.running(spec=pod(restart_policy="Never"))
    interrupt(sweeper.world, inst)

    report = sweeper.run()
    rec = sweeper.world.rec
    assert (rec.phase, rec.reason) == (Phase.FAILED, SPOT_INTERRUPTED)
    assert "Server.SpotInstanceTermination" in rec.message and inst["InstanceId"] in rec.message
    assert report.failed == [UID] and sweeper.published == []
    assert inst["InstanceId"] in sweeper.world.ec2.terminated()  # its record cleaned as any lost one's


@pytest.mark.parametrize("state", ["shutting-down", "terminated", "stopping"])
def test_an_interrupted_spot_pod_that_restarts_is_replaced(sweeper: Sweeper, state: str) -> None:
    inst = sweeper.running()
    interrupt(sweeper.world, inst, state)

    report = sweeper.run()
    rec = sweeper.world.rec
    assert (rec.phase, rec.reason, rec.attempt) == (Phase.PENDING, SPOT_INTERRUPTED, 1)
    assert report.remediated == [UID] and sweeper.published == [(POD_CREATE, UID)]


def test_an_on_demand_instance_that_terminated_is_just_lost(sweeper: Sweeper) -> None:
    inst = sweeper.running()
    sweeper.world.ec2.set_state(inst["InstanceId"], "terminated")
    sweeper.world.ec2.instances[inst["InstanceId"]]["StateReason"] = {"Code": "Client.UserInitiatedShutdown"}

    sweeper.run()
    assert sweeper.world.rec.reason == "InstanceLost"


def test_the_orphan_gcs_lost_pods_name_a_spot_interruption(sweeper: Sweeper) -> None:
    inst = sweeper.running()
    interrupt(sweeper.world, inst, "terminated")

    assert remediate_lost(sweeper.sweep, sweeper.world.store.records(), live={}) == [UID]
    assert (sweeper.world.rec.phase, sweeper.world.rec.reason) == (Phase.PENDING, SPOT_INTERRUPTED)


def noticed(world: World) -> list[dict[str, Any]]:
    return [c for c in world.rec.conditions if c["type"] == SPOT_INTERRUPTION_NOTICE]


def with_notice(notice: SpotNotice) -> Any:
    return replace(app_status("Running"), spot_notice=notice)


def test_an_interruption_notice_marks_the_pod_once_and_keeps_it_running(sweeper: Sweeper) -> None:
    inst = sweeper.running()
    sweeper.world.agents.status_default = with_notice(
        SpotNotice("interruption", "terminate", "2026-01-01T00:02:00Z")
    )

    sweeper.run()
    sweeper.run()
    world = sweeper.world
    (cond,) = noticed(world)
    assert (cond["status"], cond["reason"]) == ("True", SPOT_NOTICE_REASON)
    assert "terminate" in cond["message"] and inst["InstanceId"] in cond["message"]
    events = [e for e in world.events if e.reason == SPOT_NOTICE_REASON]
    assert len(events) == 1 and events[0].event_type == "Warning"
    assert (world.rec.phase, world.rec.instance_id) == (Phase.RUNNING, inst["InstanceId"])
    assert sweeper.published == []


def test_a_rebalance_then_an_interruption_are_each_reported(sweeper: Sweeper) -> None:
    sweeper.running()
    agents = sweeper.world.agents
    agents.status_default = with_notice(SpotNotice("rebalance", "", "2026-01-01T00:00:00Z"))
    sweeper.run()
    assert [c["reason"] for c in noticed(sweeper.world)] == [SPOT_REBALANCE_REASON]

    agents.status_default = with_notice(SpotNotice("interruption", "terminate", "2026-01-01T00:02:00Z"))
    sweeper.run()
    assert [c["reason"] for c in noticed(sweeper.world)] == [SPOT_NOTICE_REASON]
    agents.status_default = with_notice(SpotNotice("rebalance", "", "2026-01-01T00:00:00Z"))
    sweeper.run()
    assert [c["reason"] for c in noticed(sweeper.world)] == [SPOT_NOTICE_REASON]  # not downgraded
    reasons = [e.reason for e in sweeper.world.events if e.reason.startswith("Spot")]
    assert reasons == [SPOT_REBALANCE_REASON, SPOT_NOTICE_REASON]


def test_a_pod_without_a_notice_writes_nothing(sweeper: Sweeper) -> None:
    sweeper.running(container_statuses=app_status("Running").container_statuses)  # as its agent says
    before = len(sweeper.world.events)
    sweeper.run()
    assert noticed(sweeper.world) == [] and len(sweeper.world.events) == before


def test_the_notice_stays_through_a_phase_write_on_its_instance(sweeper: Sweeper) -> None:
    sweeper.running(spec=pod(restart_policy="Never"))
    world = sweeper.world
    notice = SpotNotice("interruption", "terminate", "2026-01-01T00:02:00Z")
    world.agents.status_default = with_notice(notice)
    sweeper.run()
    world.agents.status_default = replace(app_status("Succeeded"), spot_notice=notice)
    sweeper.run()  # the workload finished on the noticed instance: a phase write
    assert world.rec.phase is Phase.SUCCEEDED
    assert [c["status"] for c in noticed(world)] == ["True"]
    assert len([e for e in world.events if e.reason == SPOT_NOTICE_REASON]) == 1


def test_the_notice_turns_false_when_the_pod_is_replaced(sweeper: Sweeper) -> None:
    inst = sweeper.running()
    world = sweeper.world
    world.agents.status_default = with_notice(SpotNotice("interruption", "terminate", "2026-01-01T00:02:00Z"))
    sweeper.run()

    interrupt(world, inst)
    sweeper.run()
    (cond,) = noticed(world)
    assert (cond["status"], cond["reason"]) == ("False", SPOT_NOTICE_CLEARED_REASON)
    replaced = [e for e in world.events if e.reason == SPOT_INTERRUPTED][-1]
    assert any(c["type"] == SPOT_INTERRUPTION_NOTICE and c["status"] == "False" for c in replaced.conditions)
