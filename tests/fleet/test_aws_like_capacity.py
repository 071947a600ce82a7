"""Capacity errors and slow calls end to end, against the AWS-like EC2 double.

The double (docs/testing.md) answers RunInstances with ``InsufficientInstanceCapacity`` as a test
programs it and can hold an answer back after its effect, as a slow EC2 does. A pod whose only type
has no capacity waits and runs once capacity returns; with an alternative type listed it runs on
that type at once; a type that never has capacity fails the pod with AWS's reason after the
deadline. A RunInstances slower than the pod lock's TTL still gives one instance per pod, and a slow
claim of a warm-pool member claims one member.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from tests.maintenance.conftest import run_task
from tests.support.awslike import AWS_LIKE, CapacityRule
from tests.support.ec2proxy import Ec2Proxy
from tests.support.fleet import FleetHarness, example_pod
from tests.support.services import wait_until
from vkec2.domain.models import Phase

Make = Callable[..., FleetHarness]

#: Shared-tenancy types (a Mac type runs only on a Dedicated Host: tests/fleet/test_aws_like_hosts.py).
GPU = "g5.xlarge"
ALTERNATIVE = "g6.xlarge"
#: Quick polls and short "no capacity" marks, so a test sees capacity return within seconds.
CAPACITY: dict[str, Any] = {"instance_type": GPU, "unavailable_ttl_seconds": 5}


def gpu_pod(name: str, **annotations: str) -> dict[str, Any]:
    return example_pod(name, annotations=annotations)


@pytest.mark.slow
def test_a_pod_waits_for_capacity_and_runs_when_it_returns(make_fleet: Make, ec2_proxy: Ec2Proxy) -> None:
    no_gpu = CapacityRule(code="InsufficientInstanceCapacity", instance_type=GPU, lasting=120)
    fleet = make_fleet(aws_like=replace(AWS_LIKE, capacity=(no_gpu,)), ec2=CAPACITY)
    fleet.start_worker(concurrency=4)
    started = time.monotonic()
    uid = fleet.submit(gpu_pod("gpu-waits"))

    fleet.wait_phase([uid], {Phase.PENDING}, timeout=60)
    waiting = fleet.record(uid)
    fleet.wait_phase([uid], {Phase.RUNNING}, timeout=240)
    assert time.monotonic() - started >= 100, "ran although there was no capacity"
    assert fleet.instances_by_uid() == {uid: [fleet.record(uid).instance_id]}
    refused = ec2_proxy.log.outcomes("RunInstances").count("InsufficientInstanceCapacity")
    print(
        f"\nno {GPU} capacity for 120 s: {refused} refused RunInstances, Running after "
        f"{time.monotonic() - started:.0f} s; while waiting: {waiting.reason}: {waiting.message}"
    )
    assert refused >= 1


@pytest.mark.slow
def test_an_alternative_type_runs_at_once(make_fleet: Make, ec2_proxy: Ec2Proxy) -> None:
    no_gpu = CapacityRule(code="InsufficientInstanceCapacity", instance_type=GPU)
    allow_m2 = {"default": {"instance_types": [ALTERNATIVE]}}
    fleet = make_fleet(aws_like=replace(AWS_LIKE, capacity=(no_gpu,)), ec2=CAPACITY, allowlists=allow_m2)
    fleet.start_worker(concurrency=4)
    uid = fleet.submit(
        gpu_pod("g5-or-g6", **{"compute.amazonaws.com/instance-types": f"{GPU},{ALTERNATIVE}"})
    )

    fleet.wait_phase([uid], {Phase.RUNNING}, timeout=120)
    rec = fleet.record(uid)
    assert rec.instance["InstanceType"] == ALTERNATIVE
    assert fleet.instances_by_uid() == {uid: [rec.instance_id]}


@pytest.mark.slow
def test_a_type_that_never_has_capacity_fails_with_the_aws_reason(
    make_fleet: Make, ec2_proxy: Ec2Proxy
) -> None:
    no_gpu = CapacityRule(code="InsufficientInstanceCapacity", instance_type=GPU)
    fleet = make_fleet(
        aws_like=replace(AWS_LIKE, capacity=(no_gpu,)), ec2={**CAPACITY, "capacity_deadline_seconds": 15}
    )
    fleet.start_worker(concurrency=4)
    uid = fleet.submit(gpu_pod("gpu-never"))

    fleet.wait_phase([uid], {Phase.FAILED}, timeout=120)
    rec = fleet.record(uid)
    assert rec.reason == "InsufficientInstanceCapacity", (rec.reason, rec.message)
    assert "capacity" in rec.message
    assert fleet.instances_by_uid(("pending", "running", "stopping", "stopped")) == {}, "leaked"
    assert ec2_proxy.log.launched() == []


@pytest.mark.slow
def test_a_run_instances_slower_than_the_lock_gives_one_instance_per_pod(
    make_fleet: Make, ec2_proxy: Ec2Proxy
) -> None:
    # The worst case of one EC2 call is 1 x (1 + 4) + 5 = 10 s, so a 10 s lock is accepted; EC2
    # then holds RunInstances' answer back for 12 s: the launch happens, the call times out, the
    # lock expires, and another step takes the pod over.
    slow = replace(AWS_LIKE, delays={"RunInstances": 12.0})
    fleet = make_fleet(
        aws_like=slow,
        aws={"max_attempts": 1, "connect_timeout_seconds": 1, "read_timeout_seconds": 4},
        rate_limits={"max_wait_seconds": 5},
        celery={"lock_ttl_seconds": 10},
        health={"interval_seconds": 2},
    )
    fleet.start_beat()
    fleet.start_worker(concurrency=4)
    uids = [fleet.submit(example_pod(f"slow-{i}")) for i in range(5)]

    fleet.wait_phase(uids, {Phase.RUNNING}, timeout=300)
    by_uid = fleet.instances_by_uid()
    assert sorted(by_uid) == sorted(uids)
    assert all(len(ids) == 1 for ids in by_uid.values()), by_uid
    launched = ec2_proxy.log.launched()
    print(f"\nslow RunInstances (12 s, lock 10 s): {len(launched)} instances launched for {len(uids)} pods")
    assert len(launched) == len(uids)


@pytest.mark.slow
def test_a_slow_claim_with_the_lock_lost_claims_one_warm_pool_member(
    make_fleet: Make, ec2_proxy: Ec2Proxy
) -> None:
    # The claim tags the member with CreateTags; EC2 holds that answer back past the call's read
    # timeout and the 10 s lock, once. The step that takes over must not claim a second member.
    fleet = make_fleet(
        aws_like=replace(AWS_LIKE, visibility_lag=0.0),
        warm_pools=[{"name": "warm", "desired_count": 2}],
        aws={"max_attempts": 1, "connect_timeout_seconds": 1, "read_timeout_seconds": 4},
        rate_limits={"max_wait_seconds": 5},
        celery={"lock_ttl_seconds": 10},
    )
    fleet.start_worker(concurrency=4)
    for _ in range(60):
        run_task(fleet, "vkec2.maintenance.warm_pools")
        if len(fleet.store.pool_ready("warm")) == 2:
            break
    members = set(fleet.store.pool_ready("warm"))
    assert len(members) == 2, "the pool never had 2 Ready members"
    launched = len(ec2_proxy.log.launched())

    ec2_proxy.configure(replace(AWS_LIKE, visibility_lag=0.0, delays={"CreateTags": 12.0}))
    slowed = time.time()
    uid = fleet.submit(example_pod("claims-slowly"))

    def claim_tagged() -> bool:  # logged once its (held back) answer was given
        return any(
            e.at > slowed and set(e.instance_ids) & members for e in ec2_proxy.log.events("CreateTags")
        )

    wait_until(claim_tagged, 60, "the slow CreateTags of the claim")
    assert time.time() - slowed >= 12
    ec2_proxy.configure(replace(AWS_LIKE, visibility_lag=0.0))  # EC2 answers at once again

    fleet.wait_phase([uid], {Phase.RUNNING}, timeout=180)
    rec = fleet.record(uid)
    assert rec.instance_id in members
    assert set(fleet.store.pool_ready("warm")) == members - {rec.instance_id}, "a second member was claimed"
    assert len(ec2_proxy.log.launched()) == launched, "a pod was cold-launched"
    assert fleet.instances_by_uid().get(uid) == [rec.instance_id]
