"""Spot pods end to end through the AWS-like EC2 double: launch, interruption, fallback and the notice.

A Spot pod's instance is launched with Spot market options (checked at the endpoint). When the
double interrupts it (shutting-down, then terminated, with ``Server.SpotInstanceTermination``, as
EC2 does), the health sweep reports the pod per its restartPolicy: Never fails it with reason
``SpotInterrupted`` and AWS's reason in the message; Always replaces it: a second instance, the pod
Running again, the interrupted instance never left running. A ``spot-or-on-demand`` pod whose Spot
has no capacity runs on-demand at once. An interruption notice the agent reports (the simulator
injects it, as IMDS would show it on EC2) marks the pod with a condition and an event and leaves it
running on its instance.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest

from tests.maintenance.conftest import SimControl
from tests.support import ec2wire as wire
from tests.support.awslike import CapacityRule
from tests.support.ec2proxy import Ec2Proxy
from tests.support.fleet import NODE, FleetHarness, example_pod
from tests.support.services import wait_until
from vkec2.contract import (
    CAPACITY_TYPE_ANNOTATION,
    SPOT_INTERRUPTED,
    SPOT_INTERRUPTION_NOTICE,
    SPOT_NOTICE_REASON,
    SPOT_OR_ON_DEMAND,
)
from vkec2.domain.models import Phase
from vkec2.domain.spot import instance_market

Make = Callable[..., FleetHarness]

#: A quick health sweep (beat) so an interruption is seen within seconds.
QUICK: dict[str, Any] = {
    "health": {"interval_seconds": 2},
    "gc": {"interval_seconds": 5, "grace_seconds": 0},
    "agent": {"finished_keepalive_seconds": 0},
}


@pytest.fixture
def sim(agent_sim: str) -> Iterator[SimControl]:
    control = SimControl(agent_sim)
    yield control
    control.close()


def spot_fleet(make_fleet: Make, **overrides: Any) -> FleetHarness:
    fleet = make_fleet(aws_like=True, **{**QUICK, "ec2": {"capacity_type": "spot"}, **overrides})
    fleet.start_beat()
    fleet.start_worker(concurrency=4)
    return fleet


def market_of(proxy: Ec2Proxy, instance_id: str) -> str:
    """The market the RunInstances that launched ``instance_id`` asked for, as the double received it."""
    token = proxy.token_of[instance_id]
    (request,) = {
        wire.first(p, "InstanceMarketOptions.MarketType")
        for p in proxy.run_requests
        if wire.first(p, "ClientToken") == token
    }
    return request or "on-demand"


def live(fleet: FleetHarness) -> dict[str, list[str]]:
    return fleet.instances_by_uid(("pending", "running", "stopping", "stopped"))


def events(fleet: FleetHarness, uid: str) -> list[dict[str, str]]:
    """The status events the fleet sent the producer for ``uid`` (its outbox), oldest first."""
    raw = cast(list[tuple[str, dict[str, str]]], fleet.store.redis.xrange(fleet.store.keys.outbox(NODE)))
    return [fields for _, fields in raw if fields.get("uid") == uid]


@pytest.mark.slow
def test_an_interrupted_spot_pod_that_never_restarts_fails_spot_interrupted(
    make_fleet: Make, ec2_proxy: Ec2Proxy
) -> None:
    fleet = spot_fleet(make_fleet)
    uid = fleet.submit(example_pod("spot-never", restart_policy="Never"))
    fleet.wait_phase([uid], {Phase.RUNNING}, timeout=120)
    first = fleet.record(uid).instance_id
    assert market_of(ec2_proxy, first) == "spot"
    assert instance_market(fleet.record(uid).instance) == "spot"
    launched = [e["message"] for e in events(fleet, uid) if e["reason"] == "Launched"]
    zone = fleet.record(uid).instance["Placement"]["AvailabilityZone"]
    assert launched == [f"launched instance {first} (m5.large in {zone}, spot)"]  # reported on the pod

    ec2_proxy.interrupt(first)

    fleet.wait_phase([uid], {Phase.FAILED}, timeout=60)
    rec = fleet.record(uid)
    assert rec.reason == SPOT_INTERRUPTED
    assert "Server.SpotInstanceTermination" in rec.message and first in rec.message
    assert ec2_proxy.log.launched() == [first], "a pod that never restarts got a second instance"
    wait_until(lambda: live(fleet) == {}, 60, "no instance of the cluster left")


@pytest.mark.slow
def test_an_interrupted_spot_pod_that_always_restarts_is_replaced(
    make_fleet: Make, ec2_proxy: Ec2Proxy
) -> None:
    fleet = spot_fleet(make_fleet)
    uid = fleet.submit(example_pod("spot-always", restart_policy="Always"))
    fleet.wait_phase([uid], {Phase.RUNNING}, timeout=120)
    first = fleet.record(uid).instance_id

    ec2_proxy.interrupt(first)

    def replaced() -> bool:
        rec = fleet.record(uid)
        return rec.phase is Phase.RUNNING and rec.instance_id not in ("", first)

    wait_until(replaced, 120, "the pod to run again on a new instance", interval=0.2)
    second = fleet.record(uid).instance_id
    assert market_of(ec2_proxy, second) == "spot"
    assert fleet.record(uid).attempt == 1
    reported = [(e["reason"], e["message"]) for e in events(fleet, uid)]
    assert any(reason == SPOT_INTERRUPTED for reason, _ in reported), reported
    assert live(fleet) == {uid: [second]}, "the interrupted instance is still running, or a third one"
    assert [i for i in ec2_proxy.log.launched() if i not in (first, second)] == []


@pytest.mark.slow
def test_spot_or_on_demand_runs_on_demand_when_spot_has_no_capacity(
    make_fleet: Make, ec2_proxy: Ec2Proxy
) -> None:
    fleet = make_fleet(
        aws_like=True,
        allowlists={"default": {"capacity_types": [SPOT_OR_ON_DEMAND]}},
    )
    ec2_proxy.add_capacity(CapacityRule(code="InsufficientInstanceCapacity", market="spot"))
    fleet.start_worker(concurrency=4)
    uid = fleet.submit(example_pod("spot-or-od", annotations={CAPACITY_TYPE_ANNOTATION: SPOT_OR_ON_DEMAND}))

    fleet.wait_phase([uid], {Phase.RUNNING}, timeout=120)
    rec = fleet.record(uid)
    assert market_of(ec2_proxy, rec.instance_id) == "on-demand"
    assert instance_market(rec.instance) == "on-demand"
    markets = [
        wire.first(p, "InstanceMarketOptions.MarketType") or "on-demand" for p in ec2_proxy.run_requests
    ]
    assert markets[0] == "spot" and markets[-1] == "on-demand"
    assert "InsufficientInstanceCapacity" in ec2_proxy.log.outcomes("RunInstances")
    assert live(fleet) == {uid: [rec.instance_id]}


@pytest.mark.slow
def test_an_interruption_notice_from_the_agent_marks_the_pod(
    make_fleet: Make, ec2_proxy: Ec2Proxy, sim: SimControl
) -> None:
    fleet = spot_fleet(make_fleet)
    uid = fleet.submit(example_pod("spot-notice"))
    fleet.wait_phase([uid], {Phase.RUNNING}, timeout=120)
    instance_id = fleet.record(uid).instance_id

    sim.force(instance_id, 0, spot_notice="terminate")

    def noticed() -> bool:
        return any(
            c.get("type") == SPOT_INTERRUPTION_NOTICE and c.get("status") == "True"
            for c in fleet.record(uid).conditions
        )

    wait_until(noticed, 60, "the pod to carry the interruption notice", interval=0.2)
    (condition,) = [c for c in fleet.record(uid).conditions if c.get("type") == SPOT_INTERRUPTION_NOTICE]
    assert condition["reason"] == SPOT_NOTICE_REASON and instance_id in condition["message"]
    noticed_events = [e for e in events(fleet, uid) if e.get("reason") == SPOT_NOTICE_REASON]
    assert len(noticed_events) == 1
    rec = fleet.record(uid)
    assert (rec.phase, rec.instance_id) == (Phase.RUNNING, instance_id), "replaced on a notice alone"
    sim.clear(instance_id)
