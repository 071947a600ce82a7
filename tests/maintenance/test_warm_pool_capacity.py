"""A warm pool's member launch falls back like a pod's: the pool's other subnets, then its types.

The pool reconcile launches members with RunInstances; when EC2 has no capacity for the pool's
instance type in its subnet, the member is launched in the pool's next subnet, then with the pool's
next alternative type (``instance_types``), each with a ClientToken of its own; with no capacity
anywhere the capacity error goes up (retryable) and nothing was launched. A ``spot-or-on-demand``
pool tries all of it as Spot first, then as on-demand. EC2 is the in-memory fake,
the pool's slot counter the real store.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.support.fakeagents import FakeAgents
from tests.support.fakes import FakeEc2
from vkec2.config import Settings
from vkec2.errors import Ec2Error
from vkec2.fleet.warmpool import WarmPools
from vkec2.store.redis_store import Store

POOL = {"name": "macs", "instance_type": "mac2.metal", "instance_types": ["mac2-m2.metal"]}


@pytest.fixture
def pools(redis_url: str) -> Iterator[tuple[WarmPools, FakeEc2]]:
    settings = Settings.model_validate(
        {
            "cluster_name": f"wp-{uuid.uuid4().hex[:8]}",
            "ec2": {"image_id": "ami-12345678", "subnets": ["subnet-a", "subnet-b"]},
            "warm_pools": [{**POOL, "desired_count": 1}],
        }
    )
    store = Store.from_url(redis_url, settings.cluster_name)
    ec2 = FakeEc2(settings.cluster_name)
    yield WarmPools(settings, store, ec2, FakeAgents()), ec2
    store.close()


def launches(ec2: FakeEc2) -> list[tuple[str, str, str]]:
    return [
        (c["InstanceType"], c.get("SubnetId", ""), c["ClientToken"]) for c in ec2.calls_of("RunInstances")
    ]


def test_a_member_moves_on_to_the_other_subnet_then_the_other_type(pools: tuple[WarmPools, FakeEc2]) -> None:
    warm, ec2 = pools
    ec2.no_capacity[("mac2.metal", None)] = "InsufficientInstanceCapacity"
    member = warm._launch(warm.settings.warm_pools[0])
    assert member["InstanceType"] == "mac2-m2.metal"
    tried = launches(ec2)
    assert [t for t, _, _ in tried] == ["mac2.metal", "mac2.metal", "mac2-m2.metal"]
    assert {s for _, s, _ in tried[:2]} == {"subnet-a", "subnet-b"}
    assert len({token for _, _, token in tried}) == 3


def test_no_capacity_anywhere_is_a_retryable_capacity_error(pools: tuple[WarmPools, FakeEc2]) -> None:
    warm, ec2 = pools
    ec2.no_capacity[(None, None)] = "InsufficientInstanceCapacity"
    with pytest.raises(Ec2Error) as err:
        warm._launch(warm.settings.warm_pools[0])
    assert err.value.capacity and err.value.retryable
    assert len(launches(ec2)) == 4 and ec2.instances == {}


def test_a_spot_or_on_demand_pools_member_tries_every_offering_as_spot_first(redis_url: str) -> None:
    settings = Settings.model_validate(
        {
            "cluster_name": f"wp-{uuid.uuid4().hex[:8]}",
            "ec2": {"image_id": "ami-12345678", "subnets": ["subnet-a", "subnet-b"]},
            "warm_pools": [{**POOL, "instance_types": [], "capacity_type": "spot-or-on-demand"}],
        }
    )
    store = Store.from_url(redis_url, settings.cluster_name)
    ec2 = FakeEc2(settings.cluster_name)
    warm = WarmPools(settings, store, ec2, FakeAgents())
    try:
        member = warm._launch(settings.warm_pools[0])
        (first,) = ec2.calls_of("RunInstances")
        assert first["CapacityType"] == "spot" and member["InstanceId"]
        ec2.no_capacity[("mac2.metal", None)] = "InsufficientInstanceCapacity"
        with pytest.raises(Ec2Error):
            warm._launch(settings.warm_pools[0])
        markets = [c["CapacityType"] for c in ec2.calls_of("RunInstances")[1:]]
        assert markets == ["spot", "spot", "on-demand", "on-demand"]
        tokens = [c["ClientToken"] for c in ec2.calls_of("RunInstances")[1:]]
        assert len(set(tokens)) == 4
    finally:
        store.close()
