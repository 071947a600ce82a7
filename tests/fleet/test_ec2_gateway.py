"""The EC2 gateway against moto's server over HTTP (and the ClientToken fake in front of it)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import botocore.utils
import pytest

from tests.support.ec2proxy import Ec2Proxy
from tests.support.fleet import launch_params
from vkec2.config import Settings
from vkec2.contract import TAG_CLUSTER, TAG_POD_UID
from vkec2.domain.instances import client_token
from vkec2.domain.podspec import LaunchParams
from vkec2.ec2.gateway import Ec2Gateway, parse_timestamp
from vkec2.errors import Ec2Error


@pytest.fixture
def gateway(ec2_proxy: Ec2Proxy) -> Iterator[Ec2Gateway]:
    settings = Settings.model_validate(
        {
            "cluster_name": f"gw-{uuid.uuid4().hex[:8]}",
            "aws": {"endpoint_url": ec2_proxy.url, "max_attempts": 1},
        }
    )
    yield Ec2Gateway(settings)


def params(instance_type: str = "m5.large") -> LaunchParams:
    return launch_params(instance_type, {"team": "build"})


def pod(uid: str) -> dict[str, object]:
    return {"metadata": {"uid": uid, "name": "mac-builder", "namespace": "ci"}}


def test_client_token_is_short_stable_and_distinct_per_attempt() -> None:
    uid = str(uuid.uuid4())
    assert client_token(uid, 0) == client_token(uid, 0)
    assert client_token(uid, 0) != client_token(uid, 1)
    assert len(client_token("x" * 200, 3)) <= 64


@pytest.mark.parametrize(
    "value",
    ["2026-11-30T23:00:00.000Z", "2026-11-30T23:00:00.123Z", "2026-11-30T23:00:00+02:00", "1700000000"],
)
def test_timestamps_parse_to_the_instant_botocore_reads(value: str) -> None:
    parsed = parse_timestamp(value)
    assert parsed == botocore.utils.parse_timestamp(value) and parsed.utcoffset() is not None


def test_same_token_and_parameters_return_the_same_instance(gateway: Ec2Gateway, ec2_proxy: Ec2Proxy) -> None:
    uid = str(uuid.uuid4())
    tags = gateway.pod_tags(pod(uid), "node-1")
    first = gateway.run_instance(params(), tags, client_token(uid, 0))
    again = gateway.run_instance(params(), tags, client_token(uid, 0))
    assert first["InstanceId"] == again["InstanceId"]
    assert [i["InstanceId"] for i in gateway.find_pod_instances(uid)] == [first["InstanceId"]]
    assert ec2_proxy.calls["RunInstances"] == 2


def test_same_token_with_different_parameters_fails(gateway: Ec2Gateway) -> None:
    uid = str(uuid.uuid4())
    tags = gateway.pod_tags(pod(uid), "node-1")
    gateway.run_instance(params(), tags, client_token(uid, 0))
    with pytest.raises(Ec2Error) as err:
        gateway.run_instance(params("m5.xlarge"), tags, client_token(uid, 0))
    assert err.value.code == "IdempotentParameterMismatch" and not err.value.retryable
    assert len(gateway.find_pod_instances(uid)) == 1


def test_instances_are_tagged_at_launch_and_described_in_full(gateway: Ec2Gateway) -> None:
    uid = str(uuid.uuid4())
    inst = gateway.run_instance(params(), gateway.pod_tags(pod(uid), "node-1"), client_token(uid, 0))
    tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
    assert tags[TAG_POD_UID] == uid and tags[TAG_CLUSTER] == gateway.settings.cluster_name
    assert tags["vkec2.io/pod-namespace"] == "ci" and tags["vkec2.io/pod-name"] == "mac-builder"
    assert tags["team"] == "build"
    described = gateway.describe([inst["InstanceId"]])[inst["InstanceId"]]
    assert described["PrivateIpAddress"] and isinstance(described["LaunchTime"], str)


def test_describe_skips_unknown_ids_and_terminate_reports_them(gateway: Ec2Gateway) -> None:
    uid = str(uuid.uuid4())
    inst = gateway.run_instance(params(), gateway.pod_tags(pod(uid), "n"), client_token(uid, 0))
    ghost = "i-0123456789abcdef0"
    assert list(gateway.describe([inst["InstanceId"], ghost])) == [inst["InstanceId"]]
    # NotFound: gone long ago, or not visible yet; the caller, which knows the launch time, decides.
    assert gateway.terminate([ghost]) == [ghost]
    assert gateway.terminate([inst["InstanceId"], ghost]) == [ghost]
    assert gateway.find_pod_instances(uid) == []


def test_throttling_is_a_retryable_error_and_counted(ec2_proxy: Ec2Proxy, gateway: Ec2Gateway) -> None:
    ec2_proxy.throttle_fraction = 1.0
    with pytest.raises(Ec2Error) as err:
        gateway.find_pod_instances("anything")
    assert err.value.code == "RequestLimitExceeded" and err.value.retryable
    assert err.value.reason == "EC2Throttled"
