"""The instance choice against moto's EC2 server: real workers launch what the pod's selector and
requests choose, computed from moto's own DescribeInstanceTypes data.

A pod with ``nodeSelector: {node.kubernetes.io/instance-type: c6i.large}`` launches a c6i.large; pods
asking for 6 CPU and 20Gi with no type launch the smallest of ``ec2.instance_type_choices`` that fits
(c6i.2xlarge has 8 vCPU but only 16 GiB; m5.2xlarge, 8 vCPU and 32 GiB, fits); one whose zone
selector names a zone launches in that zone's subnet; one nothing fits is Failed with
``NoInstanceTypeFits`` and launches nothing. EC2 is checked with DescribeInstances on moto itself,
and DescribeInstanceTypes is counted at the endpoint: once per worker process, not once per pod.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import boto3

from tests.fleet.test_aws_like_e2e import default_subnets
from tests.support.ec2proxy import Ec2Proxy
from tests.support.fleet import FleetHarness, example_pod
from vkec2.contract import NO_INSTANCE_TYPE_FITS, TAG_POD_UID
from vkec2.domain.models import Phase

Make = Callable[..., FleetHarness]
CHOICES = ["m5.large", "m5.2xlarge", "c6i.2xlarge", "m5.4xlarge"]
CONCURRENCY = 2


def with_spec(name: str, **spec: Any) -> dict[str, Any]:
    pod = example_pod(name)
    resources = spec.pop("requests", None)
    if resources:
        pod["spec"]["containers"][0]["resources"] = {"requests": resources}
    pod["spec"].update(spec)
    return pod


def launched(fleet: FleetHarness, uid: str) -> dict[str, Any]:
    """The pod's instance as moto describes it (by the pod-UID tag)."""
    found = fleet.instances(("pending", "running"))
    mine = [i for i in found if {"Key": TAG_POD_UID, "Value": uid} in i.get("Tags", [])]
    assert len(mine) == 1, mine
    return mine[0]


def test_selectors_and_requests_choose_the_instance_at_the_endpoint(
    make_fleet: Make, ec2_proxy: Ec2Proxy, moto_url: str
) -> None:
    first, second = default_subnets(moto_url)
    zones = {
        s["SubnetId"]: s["AvailabilityZone"]
        for s in boto3.client("ec2", endpoint_url=moto_url, region_name="us-west-2").describe_subnets(
            SubnetIds=[first, second]
        )["Subnets"]
    }
    fleet = make_fleet(
        ec2={"subnets": [first, second], "instance_type_choices": CHOICES},
        allowlists={"default": {"instance_types": ["c6i.large"]}},
    )
    fleet.start_worker(concurrency=CONCURRENCY)
    ec2_proxy.reset_counts()
    named = fleet.submit(with_spec("named", nodeSelector={"node.kubernetes.io/instance-type": "c6i.large"}))
    big = [fleet.submit(with_spec(f"big-{i}", requests={"cpu": "6", "memory": "20Gi"})) for i in range(4)]
    zoned = fleet.submit(with_spec("zoned", nodeSelector={"topology.kubernetes.io/zone": zones[second]}))
    huge = fleet.submit(with_spec("huge", requests={"cpu": "64", "memory": "1Ti"}))
    fleet.wait_phase([named, *big, zoned], {Phase.RUNNING}, timeout=180)
    fleet.wait_phase([huge], {Phase.FAILED}, timeout=60)

    assert launched(fleet, named)["InstanceType"] == "c6i.large"
    assert {launched(fleet, uid)["InstanceType"] for uid in big} == {"m5.2xlarge"}
    zoned_instance = launched(fleet, zoned)
    assert zoned_instance["SubnetId"] == second
    assert zoned_instance["Placement"]["AvailabilityZone"] == zones[second]
    assert zoned_instance["InstanceType"] == "m5.large"  # the smallest choice: no requests

    failed = fleet.record(huge)
    assert failed.reason == NO_INSTANCE_TYPE_FITS and "m5.4xlarge" in failed.message
    assert not failed.instance_id and not failed.launch_token

    # The facts are cached per worker process: prefork children ask once each (and AWS-like
    # throttling may cost a retry), never once per pod or per step.
    assert 1 <= ec2_proxy.calls["DescribeInstanceTypes"] <= 2 * CONCURRENCY, dict(ec2_proxy.calls)
