"""The adapters behind the capacity fallback: the gateway's classification and subnet zones, the Redis marks.

The gateway turns EC2's capacity and quota codes into an :class:`~vkec2.errors.Ec2Error` with
``capacity`` set (botocore's Stubber answers on the real client, so the error mapping is the one in
production), learns each subnet's zone with one DescribeSubnets per process (moto, through the
counting proxy), and the store keeps the fleet-wide "unavailable" marks with their TTL in a real
Redis.
"""

from __future__ import annotations

import time
from dataclasses import replace

import boto3
import pytest
from botocore.stub import Stubber

from tests.support.awslike import CapacityRule
from tests.support.ec2proxy import Ec2Proxy
from tests.support.fleet import launch_params
from tests.support.services import wait_until
from vkec2.config import Settings
from vkec2.contract import CAPACITY_ERROR_CODES, QUOTA_ERROR_CODES, REGION_WIDE
from vkec2.domain.launchopts import LaunchOptions, Root
from vkec2.domain.podspec import LaunchParams
from vkec2.ec2.gateway import Ec2Gateway
from vkec2.errors import Ec2Error
from vkec2.store.redis_store import Store


def launch() -> LaunchParams:
    # The root device named: the stubbed client is asked nothing but RunInstances (no DescribeImages).
    return replace(launch_params("mac2.metal"), launch=LaunchOptions(root=Root(device_name="/dev/sda1")))


def refused(code: str) -> Ec2Error:
    gateway = Ec2Gateway(Settings.model_validate({"aws": {"max_attempts": 1}}))
    with Stubber(gateway.launch_client) as stub:
        stub.add_client_error("run_instances", service_error_code=code, service_message="not now")
        with pytest.raises(Ec2Error) as err:
            gateway.run_instance(launch(), {}, "vkec2-t-0")
    return err.value


@pytest.mark.parametrize("code", sorted(CAPACITY_ERROR_CODES))
def test_capacity_codes_are_retryable_capacity_errors(code: str) -> None:
    error = refused(code)
    assert (error.code, error.capacity, error.retryable, error.reason) == (code, True, True, code)
    assert error.message == f"RunInstances: {code}: not now"


def test_run_instances_is_sent_once_however_many_attempts_other_calls_get(
    ec2_proxy: Ec2Proxy,
) -> None:
    """botocore retries HTTP 500s: a capacity refusal must not cost aws.max_attempts launches."""
    ec2_proxy.add_capacity(CapacityRule(code="InsufficientInstanceCapacity"))
    gateway = Ec2Gateway(Settings.model_validate({"aws": {"endpoint_url": ec2_proxy.url, "max_attempts": 5}}))
    with pytest.raises(Ec2Error) as err:
        gateway.run_instance(launch(), {"purpose": "capacity-test"}, "vkec2-once-0")
    assert err.value.capacity and ec2_proxy.calls["RunInstances"] == 1


def test_other_codes_are_not_capacity() -> None:
    error = refused("InvalidAMIID.NotFound")
    assert (error.capacity, error.retryable) == (False, False)
    assert QUOTA_ERROR_CODES < CAPACITY_ERROR_CODES


def test_subnet_zones_are_asked_once_per_process(moto_url: str, ec2_proxy: Ec2Proxy) -> None:
    ec2 = boto3.client("ec2", endpoint_url=moto_url, region_name="us-west-2")
    vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.42.1.0/24", AvailabilityZone="us-west-2b")
    sid = subnet["Subnet"]["SubnetId"]
    gateway = Ec2Gateway(Settings.model_validate({"aws": {"endpoint_url": ec2_proxy.url, "max_attempts": 1}}))

    assert gateway.subnet_zones([sid]) == {sid: "us-west-2b"}
    assert gateway.subnet_zones([sid]) == {sid: "us-west-2b"}
    assert ec2_proxy.calls["DescribeSubnets"] == 1
    assert gateway.subnet_zones(["subnet-0000000000000dead"]) == {}  # unknown: keyed by its ID
    assert gateway.subnet_zones(["subnet-0000000000000dead", sid]) == {sid: "us-west-2b"}
    assert ec2_proxy.calls["DescribeSubnets"] == 2


def test_unavailable_marks_expire(store: Store) -> None:
    answer = {"code": "InsufficientInstanceCapacity", "message": "not now", "at": 1.0}
    store.mark_unavailable("mac2.metal", "us-west-2a", answer, 0.3)
    store.mark_unavailable("mac2.metal", "*", {**answer, "code": "VcpuLimitExceeded"}, 60)
    wanted = [("mac2.metal", "us-west-2a"), ("mac2.metal", "us-west-2b"), ("mac2.metal", "*")]
    marks = store.unavailable(wanted)
    assert marks == {
        ("mac2.metal", "us-west-2a"): answer,
        ("mac2.metal", "*"): {**answer, "code": "VcpuLimitExceeded"},
    }
    assert store.redis.pttl(store.keys.unavailable("mac2.metal", "us-west-2a")) <= 300
    time.sleep(0.4)
    assert set(store.unavailable(wanted)) == {("mac2.metal", "*")}
    store.clear_unavailable("mac2.metal", "*")
    assert store.unavailable(wanted) == {} and store.unavailable([]) == {}


def test_a_quota_mark_is_shown_until_quotas_refresh(store: Store) -> None:
    answer = {"code": "VcpuLimitExceeded", "message": "vCPU limit of 96", "at": time.time()}
    store.mark_unavailable("mac2.metal", REGION_WIDE, answer, 60)
    store.mark_unavailable("m5.large", "us-west-2a", {"code": "InsufficientInstanceCapacity"}, 60)
    assert set(store.quota_exceeded()) == {"mac2.metal"}  # a zone's capacity is no quota
    store.clear_quota_marks()
    assert store.quota_exceeded() == {}
    assert store.unavailable([("mac2.metal", REGION_WIDE)]) == {}
    assert store.unavailable([("m5.large", "us-west-2a")]) != {}


def test_an_expired_quota_mark_is_dropped(store: Store) -> None:
    store.mark_unavailable("mac2.metal", REGION_WIDE, {"code": "VcpuLimitExceeded"}, 0.05)
    wait_until(lambda: store.quota_exceeded() == {}, 5, "the quota mark to expire")
