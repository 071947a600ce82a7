"""The instance choice in the create step, on the fakes (vkec2/fleet/choice.py, row C1 for its failures).

A pod's selector and requests narrow what RunInstances is sent with; DescribeInstanceTypes is asked
once per type per process (a type EC2 does not know is left out, logged); a selector on an instance
or zone key turns the default warm pool off, as a launch annotation does; a pod nothing satisfies is
Failed with its reason and nothing is launched; the same pod always gets the same parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.unit.fleet.world import IMAGE, POOL, World, pod
from vkec2.contract import INSTANCE_READY, NO_INSTANCE_TYPE_FITS, NO_MATCHING_INSTANCE_TYPE, NO_MATCHING_ZONE
from vkec2.domain.models import Phase
from vkec2.errors import Ec2Error, InvalidPodSpec

CHOICES = ["m5.large", "m5.2xlarge", "c6i.2xlarge", "m5.4xlarge"]
SUBNETS = ["subnet-0a", "subnet-0b", "subnet-0c"]
ZONES = {"subnet-0a": "us-west-2a", "subnet-0b": "us-west-2b", "subnet-0c": "us-west-2c"}


def chooser(make_world: Callable[..., World], **ec2: Any) -> World:
    cfg = {"image_id": IMAGE, "instance_type": "m5.large", "subnets": SUBNETS, **ec2}
    world = make_world(ec2=cfg)
    world.ec2.zones = dict(ZONES)
    return world


def spec(
    node_selector: dict[str, str] | None = None,
    cpu: str | None = None,
    memory: str | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    body = pod(annotations=annotations)
    if node_selector:
        body["spec"]["nodeSelector"] = node_selector
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v}
    if requests:
        body["spec"]["containers"][0]["resources"] = {"requests": requests}
    return body


def launched(world: World) -> list[tuple[str, str | None]]:
    return [(c["InstanceType"], c["SubnetId"]) for c in world.ec2.calls_of("RunInstances")]


def test_a_node_selector_on_the_instance_type_launches_that_type(make_world: Callable[..., World]) -> None:
    world = chooser(make_world, instance_types=["c6i.large"])
    world.seed(spec=spec({"node.kubernetes.io/instance-type": "c6i.large", "kubernetes.io/os": "linux"}))
    world.step()
    assert launched(world)[0][0] == "c6i.large"
    assert world.rec.phase is Phase.PROVISIONING
    ready = next(c for c in world.rec.conditions if c["type"] == INSTANCE_READY)
    assert ready["message"] == "c6i.large"  # the fake gives no zone; EC2's answer adds " in us-west-2b"
    assert world.ec2.calls_of("DescribeInstanceTypes") == []  # a named type needs no facts


def test_requests_launch_the_smallest_choice_that_fits_and_fall_back_to_larger_ones(
    make_world: Callable[..., World],
) -> None:
    world = chooser(make_world, instance_type_choices=CHOICES, subnets=["subnet-0a"])
    world.seed(spec=spec(cpu="6", memory="20Gi"))
    world.ec2.no_capacity[("m5.2xlarge", None)] = "InsufficientInstanceCapacity"
    world.step()
    assert launched(world) == [("m5.2xlarge", "subnet-0a"), ("m5.4xlarge", "subnet-0a")]
    assert "m5.4xlarge" in world.rec.message


def test_type_facts_are_asked_once_per_type_per_process(make_world: Callable[..., World]) -> None:
    world = chooser(make_world, instance_type_choices=CHOICES)
    choice = world.lifecycle.choice
    first = choice.params(spec(cpu="6", memory="20Gi"))
    again = choice.params(spec(cpu="1", memory="1Gi"))
    assert (first.instance_type, again.instance_type) == ("m5.2xlarge", "m5.large")
    assert first == choice.params(spec(cpu="6", memory="20Gi"))  # the same pod, the same parameters
    assert world.ec2.calls_of("DescribeInstanceTypes") == [{"InstanceTypes": sorted(CHOICES)}]


def test_a_type_ec2_does_not_know_is_left_out_and_remembered(make_world: Callable[..., World]) -> None:
    world = chooser(make_world, instance_type_choices=["zz9.huge", "m5.large"])
    choice = world.lifecycle.choice
    assert choice.params(spec(cpu="1")).instance_type == "m5.large"
    assert choice.params(spec(cpu="1")).instance_type == "m5.large"
    asked = [c["InstanceTypes"] for c in world.ec2.calls_of("DescribeInstanceTypes")]
    assert asked == [["m5.large", "zz9.huge"], ["zz9.huge"], ["m5.large"]]


def test_a_failing_describe_is_not_remembered(make_world: Callable[..., World]) -> None:
    world = chooser(make_world, instance_type_choices=CHOICES)
    world.ec2.errors["DescribeInstanceTypes"] = Ec2Error(
        "throttled", code="RequestLimitExceeded", retryable=True
    )
    with pytest.raises(Ec2Error):
        world.lifecycle.choice.params(spec(cpu="1"))
    del world.ec2.errors["DescribeInstanceTypes"]
    assert world.lifecycle.choice.params(spec(cpu="1")).instance_type == "m5.large"


@pytest.mark.parametrize(
    ("selector", "requests", "reason"),
    [
        ({"node.kubernetes.io/instance-type": "c6i.large"}, {}, NO_MATCHING_INSTANCE_TYPE),
        ({"kubernetes.io/arch": "arm64"}, {}, NO_MATCHING_INSTANCE_TYPE),
        ({"topology.kubernetes.io/zone": "eu-west-1a"}, {}, NO_MATCHING_ZONE),
        ({}, {"cpu": "64"}, NO_INSTANCE_TYPE_FITS),
    ],
)
def test_C1_a_pod_nothing_satisfies_is_failed_and_nothing_launched(
    make_world: Callable[..., World], selector: dict[str, str], requests: dict[str, str], reason: str
) -> None:
    world = chooser(make_world, instance_type_choices=CHOICES)
    annotations = (
        {"compute.amazonaws.com/instance-type": "m5.large"}
        if "node.kubernetes.io/instance-type" in selector
        else None
    )
    world.seed(spec=spec(selector, annotations=annotations, **requests))
    assert world.step() is None
    assert (world.rec.phase, world.rec.reason) == (Phase.FAILED, reason)
    assert world.events[-1].event_type == "Warning"
    assert world.ec2.calls_of("RunInstances") == []


def test_a_zone_selector_launches_only_in_that_zones_subnets(make_world: Callable[..., World]) -> None:
    world = chooser(make_world)
    world.seed(spec=spec({"topology.kubernetes.io/zone": "us-west-2c"}))
    for subnet in ("subnet-0c",):
        world.ec2.no_capacity[("m5.large", subnet)] = "InsufficientInstanceCapacity"
    world.step()
    assert launched(world) == [("m5.large", "subnet-0c")]  # no other zone to fall back to
    assert (world.rec.phase, world.rec.reason) == (Phase.PENDING, "InsufficientCapacity")


def test_an_instance_selector_turns_the_default_pool_off(make_world: Callable[..., World]) -> None:
    pools = [{"name": POOL, "instance_type": "m5.large", "desired_count": 1}]
    world = make_world(
        ec2={"image_id": IMAGE, "instance_type": "m5.large", "subnets": SUBNETS},
        warm_pools=pools,
        allowlists={"default": {"instance_types": ["c6i.large"]}},
    )
    world.ec2.zones = dict(ZONES)
    choice = world.lifecycle.choice
    assert choice.params(spec()).warm_pool == POOL
    assert choice.params(spec({"kubernetes.io/os": "linux"})).warm_pool == POOL  # the node's key
    named = choice.params(spec({"node.kubernetes.io/instance-type": "c6i.large"}))
    assert (named.warm_pool, named.instance_type) == (None, "c6i.large")
    # A named pool whose zones the selector narrows is launched cold, in the allowed zone only.
    zoned = choice.params(
        spec(
            {"topology.kubernetes.io/zone": "us-west-2b"},
            annotations={"compute.amazonaws.com/warm-pool": POOL},
        )
    )
    assert (zoned.warm_pool, zoned.subnet_id, zoned.fallback_subnets) == (None, "subnet-0b", ())


def test_a_selector_naming_an_unlisted_type_is_not_allowed(make_world: Callable[..., World]) -> None:
    world = chooser(make_world)
    world.seed(spec=spec({"node.kubernetes.io/instance-type": "p5.48xlarge"}))
    world.step()
    assert (world.rec.phase, world.rec.reason) == (Phase.FAILED, "AnnotationNotAllowed")
    assert "p5.48xlarge" in world.rec.message and world.ec2.calls_of("RunInstances") == []


def test_a_capacity_type_selector_chooses_the_market_unless_annotated(
    make_world: Callable[..., World],
) -> None:
    cfg = {"image_id": IMAGE, "instance_type": "m5.large", "subnets": SUBNETS}
    allow = {"default": {"capacity_types": ["spot", "spot-or-on-demand"]}}
    world = make_world(ec2=cfg, allowlists=allow)
    world.ec2.zones = dict(ZONES)
    choose = world.lifecycle.choice.params
    params = choose(spec({"karpenter.sh/capacity-type": "spot"}))
    assert params.capacity_type == "spot" and params.instance_type == "m5.large"
    plain = choose(spec())
    assert plain.capacity_type == "on-demand" and plain.fingerprint() != params.fingerprint()
    either = spec()
    term = {
        "matchExpressions": [
            {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["spot", "on-demand"]}
        ]
    }
    either["spec"]["affinity"] = {
        "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}
    }
    assert choose(either).capacity_type == "spot-or-on-demand"
    annotated = spec(
        {"karpenter.sh/capacity-type": "spot"},
        annotations={"compute.amazonaws.com/capacity-type": "on-demand"},
    )
    assert choose(annotated).capacity_type == "on-demand"


def test_a_capacity_type_selector_is_held_to_the_allowlist(make_world: Callable[..., World]) -> None:
    world = chooser(make_world)
    with pytest.raises(InvalidPodSpec) as caught:
        world.lifecycle.choice.params(spec({"karpenter.sh/capacity-type": "spot"}))
    assert (
        caught.value.reason == "AnnotationNotAllowed" and "karpenter.sh/capacity-type" in caught.value.message
    )


def test_a_subnet_whose_zone_is_unknown_is_retried_not_failed(make_world: Callable[..., World]) -> None:
    world = chooser(make_world)
    del world.ec2.zones["subnet-0b"]  # DescribeSubnets failed for it (the gateway logs and leaves it out)
    selector = spec({"topology.kubernetes.io/zone": "us-west-2b"})
    with pytest.raises(Ec2Error) as err:
        world.lifecycle.choice.params(selector)
    assert err.value.retryable and "subnet-0b" in err.value.message
    world.ec2.zones["subnet-0b"] = "us-west-2b"
    assert world.lifecycle.choice.params(selector).subnet_id == "subnet-0b"


def test_U2_an_instance_of_a_fallback_type_needs_no_replacement(make_world: Callable[..., World]) -> None:
    world = chooser(make_world, instance_type_choices=CHOICES, subnets=["subnet-0a"])
    body = spec(cpu="6", memory="20Gi", annotations={"compute.amazonaws.com/tags": '{"team": "a"}'})
    instance = world.instance("running", instance_type="m5.4xlarge")  # the next larger fitting type
    world.seed(Phase.RUNNING, instance=instance, spec=body)
    world.update()
    assert (world.rec.phase, world.rec.reason) == (Phase.RUNNING, "Updated")
    other = world.instance("running", instance_type="m5.large")  # does not fit: not a fallback
    world.seed(Phase.RUNNING, instance=other, spec=body)
    world.update()
    assert (world.rec.phase, world.rec.reason) == (Phase.RUNNING, "ReplacementNeeded")
