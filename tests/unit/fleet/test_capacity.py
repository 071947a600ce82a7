"""Rows C24 to C26 of the transition table: capacity fallback, on the fakes.

EC2 answers capacity errors as programmed per instance type and subnet (``FakeEc2.no_capacity``);
the fleet-wide "unavailable" marks live in the fake store on its clock. Each test takes create
steps under the pod's lock and checks which candidates RunInstances was sent, with which
ClientToken, what the pod records meanwhile (Pending with AWS's answer, a quota condition) and
that nothing is left running when it gives up.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tests.unit.fleet.world import IMAGE, POOL, UID, World, pod
from vkec2.contract import QUOTA_EXCEEDED, REGION_WIDE
from vkec2.domain.instances import client_token
from vkec2.domain.models import Phase
from vkec2.errors import Ec2Error
from vkec2.fleet import capacity

ANN = "compute.amazonaws.com/"
ICE = "InsufficientInstanceCapacity"
SUBNETS = ["subnet-0a", "subnet-0b", "subnet-0c"]


def three_subnets(make_world: Callable[..., World], **ec2: Any) -> World:
    world = make_world(ec2={"image_id": IMAGE, "instance_type": "m5.large", "subnets": SUBNETS, **ec2})
    world.ec2.zones = {"subnet-0a": "az-a", "subnet-0b": "az-b", "subnet-0c": "az-c"}
    return world


def launches(world: World) -> list[tuple[str, str | None]]:
    return [(c["InstanceType"], c["SubnetId"]) for c in world.ec2.calls_of("RunInstances")]


def quota_condition(world: World) -> dict[str, Any] | None:
    return next((c for c in world.rec.conditions if c["type"] == QUOTA_EXCEEDED), None)


def test_C24_no_capacity_in_the_pods_subnet_moves_on_to_the_next(make_world: Callable[..., World]) -> None:
    world = three_subnets(make_world)
    world.seed()
    picked = launch_subnet(world)  # the pod's own subnet, picked from its UID
    world.ec2.no_capacity[("m5.large", picked)] = ICE

    assert world.step() is not None
    rec = world.rec
    assert (rec.phase, rec.reason) == (Phase.PROVISIONING, "Launched")
    (refused, launched) = launches(world)
    assert refused == ("m5.large", picked) and launched[0] == "m5.large" and launched[1] != picked
    assert len(world.ec2.instances) == 1
    zone = world.ec2.zones[picked]
    assert set(world.store.marks) == {("m5.large", zone)}
    assert world.store.marks[("m5.large", zone)][1]["code"] == ICE


def launch_subnet(world: World) -> str:
    """The subnet the pod launches in first (a dry step on a copy of the world's settings)."""
    probe = World(world.settings)
    probe.seed()
    probe.step()
    (call,) = probe.ec2.calls_of("RunInstances")
    return str(call["SubnetId"])


def test_C24_every_candidate_has_its_own_client_token(make_world: Callable[..., World]) -> None:
    world = three_subnets(make_world)
    world.ec2.no_capacity[("m5.large", None)] = ICE
    world.ec2.no_capacity[("m5a.large", launch_subnet(world))] = ICE
    world.seed(attempt=1, spec=pod(annotations={f"{ANN}instance-types": "m5.large, m5a.large"}))

    world.step()  # three refusals: the step's budget
    world.step()
    tokens = [c["ClientToken"] for c in world.ec2.calls_of("RunInstances")]
    assert tokens[0] == client_token(UID, 1)  # the pod's own parameters keep the plain token
    assert len(set(tokens)) == len(tokens) and all(t.startswith(f"vkec2-{UID}-1-") for t in tokens[1:])
    assert all(len(t) <= 64 for t in tokens)
    assert world.rec.phase is Phase.PROVISIONING


def test_C24_alternative_instance_types_after_every_subnet(make_world: Callable[..., World]) -> None:
    world = three_subnets(make_world, instance_types=["m5a.large", "m6i.large"])
    world.ec2.no_capacity[("m5.large", None)] = ICE
    world.seed()

    assert world.step() == capacity.NEXT_CANDIDATE_SECONDS  # budget spent on the three subnets
    assert world.rec.phase is Phase.PENDING and world.ec2.instances == {}
    world.step()
    assert [t for t, _ in launches(world)] == ["m5.large"] * 3 + ["m5a.large"]
    assert (world.rec.phase, world.rec.instance["InstanceType"]) == (Phase.PROVISIONING, "m5a.large")


def test_C24_a_pool_lists_its_alternative_types(make_world: Callable[..., World]) -> None:
    pools = [{"name": POOL, "instance_type": "c6i.metal", "instance_types": ["c7i.metal"]}]
    world = make_world(warm_pools=pools)
    world.ec2.no_capacity[("c6i.metal", None)] = "InsufficientInstanceCapacity"
    world.seed(spec=pod(annotations={f"{ANN}warm-pool": POOL}))  # no Ready member: a cold launch

    world.step()
    assert [t for t, _ in launches(world)] == ["c6i.metal", "c7i.metal"]
    assert world.rec.instance["InstanceType"] == "c7i.metal"


def test_C24_a_marked_pair_is_skipped_without_asking_ec2(make_world: Callable[..., World]) -> None:
    world = three_subnets(make_world)
    picked = launch_subnet(world)
    world.store.mark_unavailable("m5.large", world.ec2.zones[picked], {"code": ICE, "message": "x"}, 180)
    world.seed()

    world.step()
    assert picked not in [s for _, s in launches(world)]
    assert len(launches(world)) == 1 and world.rec.phase is Phase.PROVISIONING


def test_C24_a_mark_expires(make_world: Callable[..., World]) -> None:
    world = make_world()
    clock = [1000.0]
    world.store.clock = lambda: clock[0]
    world.store.mark_unavailable("m5.large", "subnet-0a", {"code": ICE, "message": "x"}, 180)
    assert world.store.unavailable([("m5.large", "subnet-0a")])
    clock[0] += 181
    assert world.store.unavailable([("m5.large", "subnet-0a")]) == {}


def test_C25_no_capacity_anywhere_waits_in_pending(make_world: Callable[..., World]) -> None:
    world = make_world()  # one subnet, one type
    world.ec2.no_capacity[(None, None)] = ICE
    world.seed()

    delay = world.step()
    rec = world.rec
    assert delay is not None and delay >= capacity.CAPACITY_POLL_SECONDS
    assert (rec.phase, rec.reason) == (Phase.PENDING, "InsufficientCapacity")
    assert rec.message.startswith(f"{ICE}: no m5.large capacity; unavailable: m5.large in subnet-0a")
    assert rec.capacity_since > 0 and rec.attempt == 0
    assert [(e.phase, e.reason, e.event_type) for e in world.events] == [
        (Phase.PENDING, "InsufficientCapacity", "Warning")
    ]
    assert world.ec2.instances == {} and quota_condition(world) is None

    world.step()  # the pair is marked: EC2 is not asked again, and nothing new is reported
    assert len(launches(world)) == 1 and len(world.events) == 1
    assert world.rec.capacity_since == rec.capacity_since


def test_C25_capacity_returns_and_the_pod_launches(make_world: Callable[..., World]) -> None:
    world = make_world()
    world.ec2.no_capacity[(None, None)] = ICE
    world.seed()
    world.step()
    del world.ec2.no_capacity[(None, None)]
    world.store.marks.clear()  # the mark's TTL passed

    world.step()
    assert (world.rec.phase, world.rec.reason) == (Phase.PROVISIONING, "Launched")
    assert len(world.ec2.instances) == 1


def test_C25_vcpu_limit_is_a_quota_condition_for_the_region(make_world: Callable[..., World]) -> None:
    world = three_subnets(make_world)
    world.ec2.no_capacity[("m5.large", None)] = "VcpuLimitExceeded"
    world.seed()

    world.step()
    rec = world.rec
    assert (rec.phase, rec.reason) == (Phase.PENDING, "QuotaExceeded")
    assert len(launches(world)) == 1  # a quota is region-wide: the other subnets are not tried
    assert set(world.store.marks) == {("m5.large", REGION_WIDE)}
    cond = quota_condition(world)
    assert cond is not None and (cond["status"], cond["reason"]) == ("True", "VcpuLimitExceeded")
    assert world.events[-1].conditions == rec.conditions

    del world.ec2.no_capacity[("m5.large", None)]  # the quota was raised
    world.store.marks.clear()
    world.step()
    cond = quota_condition(world)
    assert world.rec.phase is Phase.PROVISIONING
    assert cond is not None and cond["status"] == "False"  # written False, or the producer keeps it


def test_C26_no_capacity_past_the_deadline_fails_with_awss_answer(make_world: Callable[..., World]) -> None:
    world = make_world(ec2={"image_id": IMAGE, "subnets": ["subnet-0a"], "capacity_deadline_seconds": 600})
    world.ec2.no_capacity[(None, "subnet-0a")] = ICE
    world.seed()
    world.step()
    world.seed(
        phase=Phase.PENDING,
        reason="InsufficientCapacity",
        message=world.rec.message,
        capacity_since=time.time() - 601,
    )
    world.store.marks.clear()

    assert world.step() is None
    rec = world.rec
    assert (rec.phase, rec.reason) == (Phase.FAILED, ICE)
    assert "no m5.large capacity" in rec.message and "within 600s" in rec.message
    assert world.events[-1].event_type == "Warning"
    assert world.ec2.instances == {} and world.ec2.calls_of("TerminateInstances") == []
    assert world.step() is None  # Failed is final: the chain ends


def test_C26_the_deadline_counts_from_the_first_refusal_only(make_world: Callable[..., World]) -> None:
    world = make_world()
    world.ec2.no_capacity[(None, None)] = ICE
    # An old stamp from an earlier wait (another reason now) does not count.
    world.seed(reason="InstanceLost", capacity_since=time.time() - 10_000)

    world.step()
    assert (world.rec.phase, world.rec.reason) == (Phase.PENDING, "InsufficientCapacity")
    assert world.rec.capacity_since > time.time() - 60


def test_other_ec2_errors_are_not_capacity(make_world: Callable[..., World]) -> None:
    world = make_world()
    world.ec2.errors["RunInstances"] = Ec2Error("RunInstances: InvalidAMIID.NotFound: x", code="x")
    world.seed()
    try:
        world.step()
    except Ec2Error as exc:
        assert not exc.capacity
    else:
        raise AssertionError("the error should reach the task")
    assert world.store.marks == {}
