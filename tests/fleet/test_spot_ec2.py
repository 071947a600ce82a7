"""Spot launches and interruptions at the EC2 endpoint: the gateway against moto's server, and the double.

A Spot launch's RunInstances carries ``InstanceMarketOptions`` (checked in the request the double
received, and in moto's answer: ``InstanceLifecycle=spot``); an on-demand one carries none. The
double refuses Spot launches only when a capacity rule says ``market="spot"``, and interrupts a
Spot instance on request: shutting-down, then terminated, with the Spot state reason.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import pytest
from botocore.exceptions import ClientError

from tests.support import ec2wire as wire
from tests.support.awslike import AwsLike, CapacityRule
from tests.support.ec2client import single_attempt_client
from tests.support.ec2proxy import Ec2Proxy
from tests.support.fleet import TEST_AMI, launch_params
from tests.support.services import wait_until
from vkec2.config import Settings
from vkec2.contract import SPOT, TAG_CAPACITY_TYPE
from vkec2.domain.instances import client_token, tag_map
from vkec2.domain.spot import interruption
from vkec2.ec2.gateway import Ec2Gateway
from vkec2.errors import Ec2Error

if TYPE_CHECKING:
    pass

SPOT_OPTIONS: Any = {
    "MarketType": "spot",
    "SpotOptions": {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"},
}


@pytest.fixture
def gateway(ec2_proxy: Ec2Proxy) -> Iterator[Ec2Gateway]:
    settings = Settings.model_validate(
        {
            "cluster_name": f"spot-{uuid.uuid4().hex[:8]}",
            "aws": {"endpoint_url": ec2_proxy.url, "max_attempts": 1},
        }
    )
    yield Ec2Gateway(settings)


def sent(proxy: Ec2Proxy, token: str) -> wire.Params:
    """The RunInstances the double received with ClientToken ``token``."""
    (params,) = [p for p in proxy.run_requests if wire.first(p, "ClientToken") == token]
    return params


def test_a_spot_launch_carries_market_options_and_moto_shows_a_spot_instance(
    gateway: Ec2Gateway, ec2_proxy: Ec2Proxy
) -> None:
    token = client_token(str(uuid.uuid4()), 0)
    spot = replace(launch_params(), capacity_type=SPOT, spot_max_price="0.05")
    instance = gateway.run_instance(spot, {"Name": "spot"}, token)

    request = sent(ec2_proxy, token)
    assert wire.first(request, "InstanceMarketOptions.MarketType") == "spot"
    assert wire.first(request, "InstanceMarketOptions.SpotOptions.SpotInstanceType") == "one-time"
    assert (
        wire.first(request, "InstanceMarketOptions.SpotOptions.InstanceInterruptionBehavior") == "terminate"
    )
    assert wire.first(request, "InstanceMarketOptions.SpotOptions.MaxPrice") == "0.05"
    described = gateway.describe([instance["InstanceId"]])[instance["InstanceId"]]
    assert described.get("InstanceLifecycle") == "spot"
    assert tag_map(described)[TAG_CAPACITY_TYPE] == SPOT


def test_an_on_demand_launch_carries_no_market_options(gateway: Ec2Gateway, ec2_proxy: Ec2Proxy) -> None:
    token = client_token(str(uuid.uuid4()), 0)
    instance = gateway.run_instance(launch_params(), {"Name": "od"}, token)

    assert not [k for k in sent(ec2_proxy, token) if k.startswith("InstanceMarketOptions")]
    described = gateway.describe([instance["InstanceId"]])[instance["InstanceId"]]
    assert "InstanceLifecycle" not in described
    assert TAG_CAPACITY_TYPE not in tag_map(described)


def test_a_spot_only_capacity_rule_refuses_spot_and_lets_on_demand_launch(
    gateway: Ec2Gateway, ec2_proxy: Ec2Proxy
) -> None:
    ec2_proxy.add_capacity(CapacityRule(code="InsufficientInstanceCapacity", market="spot"))
    spot = replace(launch_params(), capacity_type=SPOT)
    with pytest.raises(Ec2Error) as refused:
        gateway.run_instance(spot, {}, client_token(str(uuid.uuid4()), 0))
    assert refused.value.capacity and refused.value.code == "InsufficientInstanceCapacity"
    assert gateway.run_instance(launch_params(), {"Name": "od"}, client_token(str(uuid.uuid4()), 0))[
        "InstanceId"
    ]


def test_spot_capacity_codes_are_capacity_answers(gateway: Ec2Gateway, ec2_proxy: Ec2Proxy) -> None:
    ec2_proxy.add_capacity(CapacityRule(code="SpotMaxPriceTooLow", market="spot"))
    with pytest.raises(Ec2Error) as refused:
        gateway.run_instance(
            replace(launch_params(), capacity_type=SPOT), {}, client_token(str(uuid.uuid4()), 0)
        )
    assert refused.value.capacity and refused.value.code == "SpotMaxPriceTooLow"


def test_the_double_interrupts_a_spot_instance_as_ec2_does(ec2_proxy: Ec2Proxy) -> None:
    ec2_proxy.configure(AwsLike(shutting_down_seconds=1.0))
    ec2 = single_attempt_client(ec2_proxy.url)
    run = ec2.run_instances(
        ImageId=TEST_AMI, InstanceType="m5.large", MinCount=1, MaxCount=1, InstanceMarketOptions=SPOT_OPTIONS
    )
    instance_id = run["Instances"][0]["InstanceId"]

    ec2_proxy.interrupt(instance_id)

    def described() -> dict[str, object]:
        found = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
        return dict(found)

    first = described()
    assert first["State"]["Name"] == "shutting-down"  # type: ignore[index]
    assert first["InstanceLifecycle"] == "spot"
    assert first["StateReason"]["Code"] == "Server.SpotInstanceTermination"  # type: ignore[index]
    assert interruption(first) is not None and "Server.SpotInstanceTermination" in interruption(first)  # type: ignore[operator]
    wait_until(lambda: described()["State"]["Name"] == "terminated", 10, "the interrupted instance to end")  # type: ignore[index]
    moto = single_attempt_client(ec2_proxy.upstream)
    upstream = moto.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    assert upstream["State"]["Name"] == "terminated"


def test_interrupt_needs_a_known_instance(ec2_proxy: Ec2Proxy) -> None:
    ec2 = single_attempt_client(ec2_proxy.url)
    with pytest.raises(ClientError):
        ec2.describe_instances(InstanceIds=["i-0123456789abcdef0"])
    with pytest.raises(AssertionError):
        ec2_proxy.interrupt("i-0123456789abcdef0")
