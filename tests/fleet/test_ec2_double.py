"""The EC2 double itself, driven with boto3 over the real wire: each AWS-like behaviour, asserted.

Short windows (about a second) keep these fast; every wait is for a condition, never a fixed sleep.
boto3 runs with a single attempt so each request's own answer is seen.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import pytest
from botocore.exceptions import ClientError

from tests.support.awslike import (
    AWS_LIKE,
    AWS_REQUEST_BUCKETS,
    E2E_DEFAULT,
    AwsLike,
    Bucket,
    CapacityRule,
    TokenBuckets,
)
from tests.support.ec2client import client_error, single_attempt_client
from tests.support.ec2proxy import Ec2Proxy
from tests.support.fleet import TEST_AMI, FleetHarness
from tests.support.services import wait_until
from vkec2.contract import TAG_CLUSTER

if TYPE_CHECKING:
    from types_boto3_ec2 import EC2Client

WAIT = 10.0


@pytest.fixture
def ec2(ec2_proxy: Ec2Proxy) -> EC2Client:
    return single_attempt_client(ec2_proxy.url)


@pytest.fixture
def moto(ec2_proxy: Ec2Proxy) -> EC2Client:
    """moto itself, behind the double's back: the ground truth."""
    return single_attempt_client(ec2_proxy.upstream)


def launch(ec2: EC2Client, *, instance_type: str = "m5.large", **extra: Any) -> str:
    tag = {"ResourceType": "instance", "Tags": [{"Key": "double", "Value": extra.pop("label", "x")}]}
    answer = ec2.run_instances(
        ImageId=TEST_AMI,
        InstanceType=instance_type,  # type: ignore[arg-type]
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[tag],  # type: ignore[list-item]
        **extra,
    )
    return answer["Instances"][0]["InstanceId"]


def state(ec2: EC2Client, instance_id: str) -> str:
    reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    return reservations[0]["Instances"][0]["State"]["Name"]


def listed(ec2: EC2Client, label: str, states: list[str] | None = None) -> list[str]:
    filters: list[Any] = [{"Name": "tag:double", "Values": [label]}]
    if states is not None:
        filters.append({"Name": "instance-state-name", "Values": states})
    pages = ec2.get_paginator("describe_instances").paginate(Filters=filters)
    return [i["InstanceId"] for page in pages for r in page["Reservations"] for i in r["Instances"]]


def subnets(ec2: EC2Client) -> list[tuple[str, str]]:
    found = ec2.describe_subnets()["Subnets"]
    return sorted((s["AvailabilityZone"], s["SubnetId"]) for s in found)


def test_off_by_default_it_answers_like_moto(ec2_proxy: Ec2Proxy, ec2: EC2Client) -> None:
    assert ec2_proxy.aws == AwsLike()
    iid = launch(ec2)
    assert state(ec2, iid) == "running"
    ec2.create_tags(Resources=[iid], Tags=[{"Key": "k", "Value": "v"}])
    ec2.terminate_instances(InstanceIds=[iid])
    assert state(ec2, iid) == "terminated"
    assert [e.action for e in ec2_proxy.log.events(instance_id=iid)] == [
        "RunInstances",
        "DescribeInstances",
        "CreateTags",
        "TerminateInstances",
        "DescribeInstances",
    ]


def test_a_young_instance_is_unknown_by_id_and_absent_from_listings(
    ec2_proxy: Ec2Proxy, ec2: EC2Client, moto: EC2Client
) -> None:
    label = uuid.uuid4().hex
    old = launch(ec2, label=label)  # launched before the lag was switched on: visible
    ec2_proxy.configure(AwsLike(visibility_lag=3.0))  # long enough for the checks below
    young = launch(ec2, label=label)
    by_id = client_error(lambda: ec2.describe_instances(InstanceIds=[young]))
    assert by_id == ("InvalidInstanceID.NotFound", 400, f"The instance ID '{young}' does not exist")
    code, _, message = client_error(lambda: ec2.describe_instances(InstanceIds=[old, young]))
    assert code == "InvalidInstanceID.NotFound" and young in message and old not in message
    assert listed(ec2, label) == [old]
    assert listed(ec2, label, ["pending", "running"]) == [old]
    filtered = ec2.describe_instances(Filters=[{"Name": "instance-id", "Values": [old, young]}])
    assert [i["InstanceId"] for r in filtered["Reservations"] for i in r["Instances"]] == [old]
    missing = client_error(lambda: ec2.describe_instance_status(InstanceIds=[young]))
    assert missing[0] == "InvalidInstanceID.NotFound"
    statuses = ec2.describe_instance_status(IncludeAllInstances=True)["InstanceStatuses"]
    assert young not in {s["InstanceId"] for s in statuses}
    tag: list[Any] = [{"Key": "k", "Value": "v"}]
    untagged = client_error(lambda: ec2.create_tags(Resources=[young], Tags=tag))
    assert untagged[0] == "InvalidInstanceID.NotFound"
    gone = client_error(lambda: ec2.terminate_instances(InstanceIds=[old, young]))
    assert gone[:2] == ("InvalidInstanceID.NotFound", 400)
    # The failed calls did nothing, as on AWS: both still run, untagged.
    truth = moto.describe_instances(InstanceIds=[old, young])["Reservations"]
    assert {i["State"]["Name"] for r in truth for i in r["Instances"]} == {"running"}
    wait_until(lambda: sorted(listed(ec2, label)) == sorted([old, young]), WAIT, "the young instance to show")
    assert state(ec2, young) == "running"
    ec2.terminate_instances(InstanceIds=[young])


def test_a_client_token_replays_the_same_young_instance(ec2_proxy: Ec2Proxy, ec2: EC2Client) -> None:
    ec2_proxy.configure(AwsLike(visibility_lag=5.0))
    first = launch(ec2, ClientToken="tok-1")
    assert launch(ec2, ClientToken="tok-1") == first
    mismatch = client_error(lambda: launch(ec2, instance_type="m5.xlarge", ClientToken="tok-1"))
    assert mismatch[:2] == ("IdempotentParameterMismatch", 400)
    assert ec2_proxy.log.launched() == [first]


def test_pending_then_running_and_shutting_down_then_terminated(ec2_proxy: Ec2Proxy, ec2: EC2Client) -> None:
    ec2_proxy.configure(AwsLike(pending_seconds=1.5, shutting_down_seconds=1.5))
    label = uuid.uuid4().hex
    iid = launch(ec2, label=label)
    reservation = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]
    assert reservation["Instances"][0]["State"] == {"Code": 0, "Name": "pending"}
    assert listed(ec2, label, ["running"]) == []
    assert listed(ec2, label, ["pending"]) == [iid]
    assert ec2.describe_instance_status(InstanceIds=[iid])["InstanceStatuses"] == []
    wait_until(lambda: state(ec2, iid) == "running", WAIT, "the instance to run")
    assert listed(ec2, label, ["running"]) == [iid]
    assert listed(ec2, label, ["pending"]) == []

    answer = ec2.terminate_instances(InstanceIds=[iid])["TerminatingInstances"][0]
    assert answer["CurrentState"] == {"Code": 32, "Name": "shutting-down"}
    assert state(ec2, iid) == "shutting-down"
    assert listed(ec2, label, ["pending", "running", "shutting-down"]) == [iid]
    assert listed(ec2, label, ["terminated"]) == []
    wait_until(lambda: state(ec2, iid) == "terminated", WAIT, "the instance to terminate")
    assert listed(ec2, label, ["terminated"]) == [iid]
    assert listed(ec2, label, ["pending", "running", "shutting-down"]) == []


@pytest.mark.parametrize(
    ("code", "status", "words"),
    [
        ("InsufficientInstanceCapacity", 500, "do not have sufficient mac2.metal capacity"),
        ("InsufficientHostCapacity", 500, "not enough capacity"),
        ("VcpuLimitExceeded", 400, "vCPU limit"),
        ("Unsupported", 400, "instance type (mac2.metal) is not supported"),
    ],
)
def test_capacity_errors_by_instance_type(
    ec2_proxy: Ec2Proxy, ec2: EC2Client, code: str, status: int, words: str
) -> None:
    ec2_proxy.configure(AwsLike(capacity=(CapacityRule(code, instance_type="mac2.metal"),)))
    got = client_error(lambda: launch(ec2, instance_type="mac2.metal", ClientToken=f"cap-{code}"))
    assert got[:2] == (code, status) and words in got[2], got
    launch(ec2, instance_type="m5.large")
    assert ec2_proxy.log.outcomes("RunInstances") == [code, "ok"]
    assert len(ec2_proxy.log.launched()) == 1


def test_capacity_errors_by_zone_for_a_time_window(ec2_proxy: Ec2Proxy, ec2: EC2Client) -> None:
    (zone_a, subnet_a), (_, subnet_b), *_ = subnets(ec2)
    ec2_proxy.add_capacity(CapacityRule(availability_zone=zone_a, lasting=1.5))
    code, status, message = client_error(lambda: launch(ec2, SubnetId=subnet_a, ClientToken="win-1"))
    assert (code, status) == ("InsufficientInstanceCapacity", 500) and f"({zone_a})" in message
    launch(ec2, SubnetId=subnet_b)
    # The token of a refused launch was not used: the same call launches once the window is over.
    launched: list[str] = []

    def retried() -> bool:
        try:
            launched.append(launch(ec2, SubnetId=subnet_a, ClientToken="win-1"))
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "InsufficientInstanceCapacity"
            return False
        return True

    wait_until(retried, WAIT, "the capacity window to close", interval=0.1)
    assert launched and launched[0] in ec2_proxy.log.launched()


def test_capacity_errors_by_subnet_at_a_rate(ec2_proxy: Ec2Proxy, ec2: EC2Client) -> None:
    (_, subnet_a), (_, subnet_b), *_ = subnets(ec2)
    ec2_proxy.add_capacity(CapacityRule("Unsupported", subnet_id=subnet_a, fraction=0.5))
    outcomes = []
    for _ in range(16):
        try:
            launch(ec2, SubnetId=subnet_a)
            outcomes.append("ok")
        except ClientError as exc:
            outcomes.append(exc.response["Error"]["Code"])
    assert set(outcomes) == {"ok", "Unsupported"}, outcomes
    launch(ec2, SubnetId=subnet_b)
    ec2_proxy.clear_capacity()
    launch(ec2, SubnetId=subnet_a)


def test_throttling_by_fraction(ec2_proxy: Ec2Proxy, ec2: EC2Client) -> None:
    ec2_proxy.configure(AwsLike(throttle_fraction=1.0))
    assert client_error(ec2.describe_instances)[:2] == ("RequestLimitExceeded", 503)
    assert ec2_proxy.throttled["DescribeInstances"] == 1


def test_throttling_by_token_buckets_per_api(ec2_proxy: Ec2Proxy, ec2: EC2Client) -> None:
    ec2_proxy.configure(AwsLike(buckets={"describe": Bucket(3, 0.5)}))
    for _ in range(3):
        ec2.describe_instances()
    assert client_error(ec2.describe_instances)[:2] == ("RequestLimitExceeded", 503)
    ec2.describe_instance_status()  # each API has its own bucket
    wait_until(lambda: answered(ec2.describe_instances), WAIT, "a token to be refilled", interval=0.2)
    assert ec2_proxy.throttled["DescribeInstances"] >= 1 and not ec2_proxy.throttled["DescribeInstanceStatus"]


def answered(call: Callable[[], object]) -> bool:
    try:
        call()
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "RequestLimitExceeded"
        return False
    return True


def test_token_buckets_follow_awss_algorithm() -> None:
    buckets = TokenBuckets(AWS_REQUEST_BUCKETS)
    assert [buckets.take("RunInstances", 0.0) for _ in range(6)] == [True] * 5 + [False]
    assert buckets.take("RunInstances", 0.4) is False  # 0.8 token refilled
    assert buckets.take("RunInstances", 0.6) is True  # refilled 2 per second
    assert all(buckets.take("DescribeInstances", 0.0) for _ in range(100))
    assert buckets.take("DescribeInstances", 0.0) is False
    assert buckets.take("DescribeInstanceStatus", 0.0) is True  # another API, another bucket
    assert all(buckets.take("TerminateInstances", 0.0) for _ in range(50))
    assert buckets.take("TerminateInstances", 0.0) is False
    assert buckets.take("TerminateInstances", 0.2) is True  # mutating: 5 per second


def test_a_slow_answer_comes_after_its_effect(ec2_proxy: Ec2Proxy, ec2: EC2Client, moto: EC2Client) -> None:
    ec2_proxy.configure(AwsLike(delays={"RunInstances": 2.5}))
    label = uuid.uuid4().hex
    answers: list[str] = []
    caller = threading.Thread(target=lambda: answers.append(launch(ec2, label=label, ClientToken=label)))
    started = time.monotonic()
    caller.start()
    wait_until(lambda: len(listed(moto, label)) == 1, WAIT, "the launch to happen")
    assert caller.is_alive() and not answers, "the answer came before the delay"
    (launched,) = listed(moto, label)
    ec2_proxy.configure(AwsLike())
    assert launch(ec2, label=label, ClientToken=label) == launched  # a retry meanwhile: same instance
    caller.join(WAIT)
    assert answers == [launched] and time.monotonic() - started >= 2.5


def test_the_event_log_orders_launch_and_termination(ec2_proxy: Ec2Proxy, ec2: EC2Client) -> None:
    ec2_proxy.configure(AwsLike(visibility_lag=1.0))
    iid = launch(ec2)
    assert client_error(lambda: ec2.terminate_instances(InstanceIds=[iid]))[0] == "InvalidInstanceID.NotFound"

    def terminated() -> bool:
        try:
            ec2.terminate_instances(InstanceIds=[iid])
        except ClientError:
            return False
        return True

    wait_until(terminated, WAIT, "the terminate to be accepted", interval=0.1)
    events = ec2_proxy.log.events(instance_id=iid)
    assert events[0].action == "RunInstances" and events[0].launched == (iid,)
    assert events[1].outcome == "InvalidInstanceID.NotFound" and events[1].terminated == ()
    assert events[-1].outcome == "ok" and events[-1].terminated == (iid,)
    launched_at, terminated_at = ec2_proxy.log.launched_at(iid), ec2_proxy.log.terminated_at(iid)
    assert launched_at is not None and terminated_at is not None and launched_at < terminated_at
    assert terminated_at == events[-1].at and events[-1].instance_ids == (iid,)


def test_the_aws_like_preset() -> None:
    assert (AWS_LIKE.visibility_lag, AWS_LIKE.pending_seconds, AWS_LIKE.shutting_down_seconds) == (5, 2, 2)
    assert AWS_LIKE.buckets == AWS_REQUEST_BUCKETS and AWS_LIKE.throttle_fraction == 0
    assert AWS_REQUEST_BUCKETS["RunInstances"] == Bucket(5, 2)
    with pytest.raises(ValueError, match="not a capacity error"):
        CapacityRule("InternalError")


def test_a_fleet_can_opt_in_and_observes_moto_directly(
    ec2_proxy: Ec2Proxy, ec2: EC2Client, make_fleet: Callable[..., FleetHarness]
) -> None:
    plain = make_fleet(aws_like=False)
    assert ec2_proxy.aws == AwsLike() and plain.settings.aws.endpoint_url == ec2_proxy.url
    unkind = make_fleet()  # the default of every end-to-end fleet test
    assert ec2_proxy.aws == E2E_DEFAULT and unkind.settings.aws.endpoint_url == ec2_proxy.url
    fleet = make_fleet(aws_like=True)
    assert ec2_proxy.aws == AWS_LIKE and fleet.settings.aws.endpoint_url == ec2_proxy.url
    tags: list[Any] = [{"ResourceType": "instance", "Tags": [{"Key": TAG_CLUSTER, "Value": fleet.cluster}]}]
    answer = ec2.run_instances(
        ImageId=TEST_AMI, InstanceType="m5.large", MinCount=1, MaxCount=1, TagSpecifications=tags
    )
    iid = answer["Instances"][0]["InstanceId"]
    assert client_error(lambda: ec2.describe_instances(InstanceIds=[iid]))[0] == "InvalidInstanceID.NotFound"
    calls = sum(ec2_proxy.calls.values())
    assert [i["InstanceId"] for i in fleet.instances()] == [iid]  # no lag for the test's own eyes
    assert sum(ec2_proxy.calls.values()) == calls  # and not counted at the endpoint
    custom = replace(AWS_LIKE, delays={"RunInstances": 3.0})
    make_fleet(aws_like=custom)
    assert ec2_proxy.aws == custom
