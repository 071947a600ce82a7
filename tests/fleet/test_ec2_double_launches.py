"""The EC2 double's launches as AWS limits them: resource-token buckets, MinCount/MaxCount, pools.

boto3 with a single attempt talks to the double over the real wire, so each request's own answer
is seen; the buckets are small and their refill fast so the waits (for a condition) stay short.
The limit arithmetic and the event log's rates are checked without a server.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import pytest
from botocore.exceptions import ClientError

from tests.support.awslike import (
    AWS_LIKE,
    AWS_RESOURCE_BUCKETS,
    E2E_DEFAULT,
    AwsLike,
    Bucket,
    CapacityRule,
    Event,
    EventLog,
    TokenBuckets,
    launch_limit_seconds,
)
from tests.support.ec2client import client_error, single_attempt_client
from tests.support.ec2proxy import Ec2Proxy
from tests.support.fleet import TEST_AMI
from tests.support.services import wait_until

if TYPE_CHECKING:
    from types_boto3_ec2 import EC2Client

WAIT = 10.0


@pytest.fixture
def ec2(ec2_proxy: Ec2Proxy) -> EC2Client:
    return single_attempt_client(ec2_proxy.url)


def run(ec2: EC2Client, low: int, high: int, *, instance_type: str = "m5.large", **extra: Any) -> list[str]:
    tag = {"ResourceType": "instance", "Tags": [{"Key": "double", "Value": extra.pop("label", "launches")}]}
    answer = ec2.run_instances(
        ImageId=TEST_AMI,
        InstanceType=instance_type,  # type: ignore[arg-type]
        MinCount=low,
        MaxCount=high,
        TagSpecifications=[tag],  # type: ignore[list-item]
        **extra,
    )
    return [i["InstanceId"] for i in answer["Instances"]]


def labelled(ec2: EC2Client, label: str) -> list[str]:
    """The instances moto holds with ``label`` (asked of moto itself: no lag, not counted)."""
    pages = ec2.get_paginator("describe_instances").paginate(
        Filters=[{"Name": "tag:double", "Values": [label]}]
    )
    return [i["InstanceId"] for page in pages for r in page["Reservations"] for i in r["Instances"]]


def test_the_instance_bucket_refuses_an_oversize_launch_whole_and_refills(
    ec2_proxy: Ec2Proxy, ec2: EC2Client
) -> None:
    ec2_proxy.configure(AwsLike(resource_buckets={"RunInstances": Bucket(5, 0.01)}))
    label = uuid.uuid4().hex
    first = run(ec2, 4, 4, label=label, ClientToken=label)
    assert len(first) == 4
    assert client_error(lambda: run(ec2, 2, 2, label=label))[:2] == ("RequestLimitExceeded", 503)
    moto = single_attempt_client(ec2_proxy.upstream)
    assert sorted(labelled(moto, label)) == sorted(first)  # refused whole: nothing launched
    assert run(ec2, 4, 4, label=label, ClientToken=label) == first  # a replay takes no tokens
    assert len(run(ec2, 1, 1, label=label)) == 1  # the token left was not taken by the refusal
    assert client_error(lambda: run(ec2, 1, 1, label=label))[0] == "RequestLimitExceeded"
    ok = [e.replay for e in ec2_proxy.log.run_requests() if e.outcome == "ok"]
    assert ok == [False, True, False] and len(labelled(moto, label)) == 5
    # Refilled at its rate: an emptied bucket of 2 per second lets a launch through again.
    ec2_proxy.configure(AwsLike(resource_buckets={"RunInstances": Bucket(2, 2)}))
    assert len(run(ec2, 2, 2, label=label)) == 2
    launched: list[str] = []

    def refilled() -> bool:
        try:
            launched.extend(run(ec2, 1, 1, label=label))
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "RequestLimitExceeded"
            return False
        return True

    wait_until(refilled, WAIT, "an instance token to be refilled", interval=0.1)
    assert len(launched) == 1 and len(labelled(moto, label)) == 8


def test_the_terminate_bucket_takes_one_token_per_instance_named(ec2_proxy: Ec2Proxy, ec2: EC2Client) -> None:
    ids = run(ec2, 3, 3)
    ec2_proxy.configure(AwsLike(resource_buckets={"TerminateInstances": Bucket(2, 0.01)}))
    assert client_error(lambda: ec2.terminate_instances(InstanceIds=ids))[:2] == ("RequestLimitExceeded", 503)
    assert len(ec2.terminate_instances(InstanceIds=ids[:2])["TerminatingInstances"]) == 2
    assert client_error(lambda: ec2.terminate_instances(InstanceIds=ids[2:]))[0] == "RequestLimitExceeded"
    assert ec2_proxy.log.outcomes("TerminateInstances") == [
        "RequestLimitExceeded",
        "ok",
        "RequestLimitExceeded",
    ]


def test_resource_buckets_take_all_tokens_or_none() -> None:
    buckets = TokenBuckets(AWS_RESOURCE_BUCKETS)
    assert buckets.take("RunInstances", 0.0, 600) and buckets.take("RunInstances", 0.0, 400)
    assert buckets.take("RunInstances", 0.0, 1) is False
    assert buckets.take("RunInstances", 1.0, 3) is False  # 2 refilled per second
    assert buckets.take("RunInstances", 1.0, 2) is True
    assert buckets.take("TerminateInstances", 0.0, 1000) and not buckets.take("TerminateInstances", 0.0, 1)
    assert buckets.take("TerminateInstances", 1.0, 20)  # 20 per second
    assert buckets.take("DescribeInstances", 0.0, 10**6)  # no resource bucket: never refused


def test_a_pool_fulfils_a_launch_partly_and_refuses_below_min_count(
    ec2_proxy: Ec2Proxy, ec2: EC2Client
) -> None:
    ec2_proxy.add_capacity(CapacityRule(instance_type="m5.large", available=3))
    label = uuid.uuid4().hex
    got = run(ec2, 2, 5, label=label)
    assert len(got) == 3 and sorted(labelled(single_attempt_client(ec2_proxy.upstream), label)) == sorted(got)
    code, status, message = client_error(lambda: run(ec2, 1, 1, label=label))
    assert (code, status) == ("InsufficientInstanceCapacity", 500)
    assert "do not have sufficient m5.large capacity" in message
    assert len(run(ec2, 2, 2, instance_type="m5.xlarge")) == 2  # another type: not in the pool
    first, refused, _ = ec2_proxy.log.run_requests()
    assert (first.min_count, first.max_count, len(first.launched)) == (2, 5, 3)
    assert (refused.min_count, refused.max_count, refused.launched) == (1, 1, ())


def test_a_pool_too_small_for_min_count_launches_nothing(ec2_proxy: Ec2Proxy, ec2: EC2Client) -> None:
    ec2_proxy.configure(AwsLike(capacity=(CapacityRule(available=2),)))
    label = uuid.uuid4().hex
    assert client_error(lambda: run(ec2, 3, 4, label=label))[0] == "InsufficientInstanceCapacity"
    assert labelled(single_attempt_client(ec2_proxy.upstream), label) == []
    assert len(run(ec2, 2, 2, label=label)) == 2  # the refusal took nothing from the pool
    with pytest.raises(ValueError, match="capacity pool"):
        CapacityRule(available=2, fraction=0.5)


def test_a_multi_instance_launch_replays_whole_and_other_counts_mismatch(
    ec2_proxy: Ec2Proxy, ec2: EC2Client
) -> None:
    ec2_proxy.configure(AwsLike(visibility_lag=5.0, capacity=(CapacityRule(available=4),)))
    token = uuid.uuid4().hex
    first = run(ec2, 1, 6, ClientToken=token)
    assert len(first) == 4  # the pool's 4
    assert run(ec2, 1, 6, ClientToken=token) == first  # the same reservation, although the pool is empty
    assert client_error(lambda: run(ec2, 1, 5, ClientToken=token))[:2] == ("IdempotentParameterMismatch", 400)
    assert client_error(lambda: run(ec2, 4, 4, ClientToken=token))[0] == "IdempotentParameterMismatch"
    assert client_error(lambda: run(ec2, 2, 6, ClientToken=token))[0] == "IdempotentParameterMismatch"
    assert ec2_proxy.log.launched() == first
    assert [e.replay for e in ec2_proxy.log.run_requests()] == [False, True, False, False, False]


def test_the_presets_carry_awss_resource_buckets() -> None:
    assert {"RunInstances": Bucket(1000, 2), "TerminateInstances": Bucket(1000, 20)} == AWS_RESOURCE_BUCKETS
    assert AWS_LIKE.resource_buckets == AWS_RESOURCE_BUCKETS
    assert E2E_DEFAULT.resource_buckets == AWS_RESOURCE_BUCKETS
    assert AwsLike().resource_buckets is None


def test_the_launch_limit_of_awss_buckets() -> None:
    assert launch_limit_seconds(5) == 0.0  # the request burst
    assert launch_limit_seconds(1000) == pytest.approx(497.5)  # one per call: 2 calls per second
    assert launch_limit_seconds(1000, batch=100) == pytest.approx(2.5)
    assert launch_limit_seconds(2000, batch=100) == pytest.approx(500.0)  # instance refill: 2 per second
    assert launch_limit_seconds(40, E2E_DEFAULT) == pytest.approx(17.5)
    assert launch_limit_seconds(1000, AwsLike()) == 0.0  # no buckets, no limit
    assert launch_limit_seconds(
        10, AwsLike(resource_buckets={"RunInstances": Bucket(5, 1)}), batch=6
    ) == float("inf")


def test_the_event_log_gives_launches_and_requests_per_second() -> None:
    log = EventLog()

    def launch(at: float, ids: tuple[str, ...], outcome: str = "ok", replay: bool = False) -> None:
        status = 200 if outcome == "ok" else 503
        log.add(
            Event(at, "RunInstances", (), outcome, status, launched=ids, replay=replay, max_count=len(ids))
        )

    launch(100.0, ("i-1", "i-2", "i-3"))
    launch(100.5, ("i-4", "i-5"))
    launch(101.9, (), "RequestLimitExceeded")
    launch(102.2, ("i-1", "i-2", "i-3"), replay=True)
    launch(102.3, ("i-6",))
    assert log.instances_launched_per_second() == [(0.0, 5.0), (1.0, 0.0), (2.0, 1.0)]
    assert log.run_requests_per_second() == [(0.0, 2.0), (1.0, 1.0), (2.0, 2.0)]
    assert log.instances_launched_per_second(start=99.0, width=2.0) == [(0.0, 2.5), (2.0, 0.5)]
    assert EventLog().run_requests_per_second() == []
