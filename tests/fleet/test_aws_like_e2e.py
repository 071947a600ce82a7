"""Exactly one instance per pod against an EC2 that behaves like AWS, with workers killed on the way.

The double (docs/testing.md) lags 5 s behind every launch, answers RequestLimitExceeded to a fifth
of all requests on top of AWS's request buckets, keeps instances pending and shutting down for a
while, and has no capacity in the first subnet. Against it 200 pods are created by a fleet of three
workers that are SIGKILLed one by one while they work, 20 creates are replayed by hand with
``celery call``, and every pod is deleted. Afterwards: no pod Failed, no pod with two instances,
no instance left running, and each pod reported Terminated only after EC2 was asked to terminate
its instance (the producer removes the pod object on that report). The EC2 calls per pod, counted
at the endpoint, are printed.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import cast

import boto3
import pytest

from tests.support.awslike import AWS_LIKE, CapacityRule
from tests.support.ec2proxy import Ec2Proxy
from tests.support.fleet import NODE, FleetHarness, example_pod
from tests.support.services import wait_until
from vkec2.domain.models import Phase

Make = Callable[..., FleetHarness]

PODS = 200
KILLS = 3
REPLAYS = 20


def default_subnets(moto_url: str) -> list[str]:
    """Two subnets of moto's default VPC, in different zones."""
    ec2 = boto3.client("ec2", endpoint_url=moto_url, region_name="us-west-2")
    subnets = sorted(ec2.describe_subnets()["Subnets"], key=lambda s: s["AvailabilityZone"])
    assert len(subnets) >= 2, subnets
    return [subnets[0]["SubnetId"], subnets[1]["SubnetId"]]


def terminated_reported_at(fleet: FleetHarness) -> dict[str, float]:
    """When the fleet reported each pod Terminated to the producer: its outbox entry's Redis time."""
    out: dict[str, float] = {}
    entries = cast(list[tuple[str, dict[str, str]]], fleet.store.redis.xrange(fleet.store.keys.outbox(NODE)))
    for entry_id, fields in entries:
        if fields.get("phase") == Phase.TERMINATED.value:
            out.setdefault(fields["uid"], int(entry_id.split("-")[0]) / 1000)
    return out


def celery_call(fleet: FleetHarness, uid: str) -> None:
    """Replay a create exactly as an operator would, with the ``celery call`` command line."""
    argv = [sys.executable, "-m", "celery", "-A", "tasks", "call", "vkec2.pods.create"]
    subprocess.run(
        [*argv, "--kwargs", f'{{"uid": "{uid}"}}'],
        env=fleet.env(),
        check=True,
        timeout=60,
        capture_output=True,
    )


@pytest.mark.slow
def test_200_pods_against_aws_like_ec2_with_kills_and_replays(
    make_fleet: Make, ec2_proxy: Ec2Proxy, moto_url: str
) -> None:
    first, second = default_subnets(moto_url)
    aws = replace(
        AWS_LIKE,
        throttle_fraction=0.2,
        capacity=(CapacityRule(code="InsufficientInstanceCapacity", subnet_id=first),),
    )
    fleet = make_fleet(
        aws_like=aws,
        aws={"launch_batch_window_seconds": 0.5},  # as deployed: cold launches in batches
        ec2={"subnets": [first, second]},
        health={"interval_seconds": 2},
        gc={"interval_seconds": 5, "grace_seconds": 0},
        agent={"finished_keepalive_seconds": 0},
    )
    fleet.start_beat()
    workers = [fleet.start_worker(concurrency=4) for _ in range(3)]
    ec2_proxy.reset_counts()
    started = time.monotonic()
    uids = [fleet.submit(example_pod(f"aws-{i}")) for i in range(PODS)]

    # Kill the workers one by one while they create, each replaced by a new one.
    def progressed(share: int) -> Callable[[], bool]:
        return lambda: sum(fleet.record(u).phase is not Phase.PENDING for u in uids) > share

    for n in range(KILLS):
        wait_until(progressed((n + 1) * PODS // 5), 300, "creates to make progress")
        victim = workers.pop(0)
        victim.kill(signal.SIGKILL)
        workers.append(fleet.start_worker(concurrency=4))
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda uid: celery_call(fleet, uid), uids[:REPLAYS]))

    fleet.wait_phase(uids, {Phase.RUNNING}, timeout=900)
    create_seconds = time.monotonic() - started
    create_calls = dict(ec2_proxy.calls)
    assert not [u for u in uids if fleet.record(u).phase is Phase.FAILED]
    by_uid = fleet.instances_by_uid()
    assert sorted(by_uid) == sorted(uids), "an instance without a pod, or a pod without one"
    duplicates = {u: ids for u, ids in by_uid.items() if len(ids) > 1}
    assert not duplicates
    assert all(fleet.record(u).instance_id == by_uid[u][0] for u in uids)

    ec2_proxy.reset_counts()
    for uid in uids:
        fleet.delete(uid)
    fleet.wait_phase(uids, {Phase.TERMINATED}, timeout=900)
    delete_calls = dict(ec2_proxy.calls)

    # Each instance was terminated at the endpoint before its pod was reported gone.
    reported = terminated_reported_at(fleet)
    for uid in uids:
        instance_id = by_uid[uid][0]
        terminated = ec2_proxy.log.terminated_at(instance_id)
        assert terminated is not None, f"{instance_id} of {uid} was never terminated at the endpoint"
        assert terminated <= reported[uid], f"{uid} reported Terminated before its instance was"

    # Nothing leaks, GC included: every instance of the cluster ends terminated.
    wait_until(
        lambda: fleet.instances_by_uid(("pending", "running", "stopping", "stopped")) == {}, 120, "no leak"
    )
    print(
        f"\n{PODS} pods against AWS-like EC2 (lag 5 s, 20 % throttling, no capacity in one subnet), "
        f"{KILLS} workers killed, {REPLAYS} replays: all Running in {create_seconds:.0f} s; "
        f"EC2 calls per pod: create {sum(create_calls.values()) / PODS:.2f} {create_calls}, "
        f"delete {sum(delete_calls.values()) / PODS:.2f} {delete_calls}"
    )
