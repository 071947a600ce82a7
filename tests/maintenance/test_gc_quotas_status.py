"""Orphan GC, quota refresh and the status log, each run on a real worker against moto and Redis.

Shown here: an instance tagged with an unknown pod UID is terminated after the grace period on the
second pass and never before; dry-run only reports; quota refresh with the Service Quotas fake
stores capacity from vCPUs and DescribeInstanceTypes, and falls back to the configured capacity with
the reason when the API is unavailable; the status log line carries every field.
"""

from __future__ import annotations

import json
import time

from tests.maintenance.conftest import Make, run_task
from tests.support.fleet import NODE, TEST_AMI, FleetHarness, example_pod
from tests.support.quotas_fake import QuotasFake
from tests.support.services import wait_until
from vkec2.contract import TAG_CLUSTER, TAG_POD_UID
from vkec2.domain.models import Phase

GC = "vkec2.maintenance.gc"


def orphan(fleet: FleetHarness) -> str:
    fleet.store.put_desired(example_pod("known"), NODE)  # Redis knows some pod: the pod list exists
    out = fleet.ec2.run_instances(
        ImageId=TEST_AMI,
        InstanceType="m5.large",
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[
            {
                "ResourceType": "instance",
                "Tags": [
                    {"Key": TAG_CLUSTER, "Value": fleet.cluster},
                    {"Key": TAG_POD_UID, "Value": "no-such-pod"},
                ],
            }
        ],
    )
    return str(out["Instances"][0]["InstanceId"])


def state(fleet: FleetHarness, iid: str) -> str:
    desc = fleet.ec2.describe_instances(InstanceIds=[iid])
    return str(desc["Reservations"][0]["Instances"][0]["State"]["Name"])


def test_orphan_is_terminated_after_the_grace_on_the_second_pass_and_never_before(make_fleet: Make) -> None:
    grace = 3.0
    fleet = make_fleet(gc={"grace_seconds": grace})
    fleet.start_worker(concurrency=2, queues="maintenance")
    iid = orphan(fleet)
    launched = time.time()
    # Within the grace: as many passes as we like, never a sighting, never a termination.
    while time.time() - launched < grace - 1:
        result = run_task(fleet, GC)
        assert iid not in result["terminated"] and result["candidates"] == 0
        assert state(fleet, iid) == "running"
    wait_until(lambda: time.time() - launched > grace + 0.5, grace + 2, "the grace period to pass")
    first = run_task(fleet, GC)
    assert first["candidates"] == 1 and first["terminated"] == []
    assert state(fleet, iid) == "running"
    second = run_task(fleet, GC)
    assert second["terminated"] == [iid]
    assert state(fleet, iid) in ("shutting-down", "terminated")
    assert fleet.store.redis.hget(fleet.store.keys.gc_stats(), "terminated") == "1"


def test_dry_run_only_reports(make_fleet: Make) -> None:
    fleet = make_fleet(gc={"grace_seconds": 0, "dry_run": True})
    fleet.start_worker(concurrency=2, queues="maintenance")
    iid = orphan(fleet)
    results = [run_task(fleet, GC) for _ in range(3)]
    assert [r["would_terminate"] for r in results] == [[], [iid], [iid]]
    assert all(r["terminated"] == [] for r in results)
    assert state(fleet, iid) == "running"


def test_quota_refresh_turns_vcpus_into_capacity(make_fleet: Make, quotas_fake: QuotasFake) -> None:
    fleet = make_fleet(quotas={"endpoint_url": quotas_fake.url, "instance_types": ["m5.large", "m5.xlarge"]})
    fleet.start_worker(concurrency=2, queues="maintenance")
    run_task(fleet, "vkec2.maintenance.quotas")
    capacity = fleet.store.redis.hgetall(fleet.store.keys.capacity())
    # 96 vCPUs: 48 x m5.large (2 vCPU, 8 GiB) beats 24 x m5.xlarge (4 vCPU, 16 GiB) on pod count.
    assert capacity["source"] == "service-quotas", capacity
    assert (capacity["cpu"], capacity["pods"], capacity["memory"]) == ("96", "48", f"{48 * 8192}Mi")
    assert quotas_fake.calls["GetServiceQuota"] == 1


def test_quota_api_unavailable_falls_back_to_configured_capacity(
    make_fleet: Make, quotas_fake: QuotasFake
) -> None:
    quotas_fake.unavailable = True
    fleet = make_fleet(
        quotas={"endpoint_url": quotas_fake.url}, node={"cpu": "12", "memory": "48Gi", "pods": "7"}
    )
    worker = fleet.start_worker(concurrency=2, queues="maintenance")
    run_task(fleet, "vkec2.maintenance.quotas")
    capacity = fleet.store.redis.hgetall(fleet.store.keys.capacity())
    assert (capacity["cpu"], capacity["memory"], capacity["pods"], capacity["source"]) == (
        "12",
        "48Gi",
        "7",
        "config",
    )
    assert "ServiceUnavailableException" in capacity["reason"]
    assert "node capacity from configuration" in worker.output()


def test_status_log_line(make_fleet: Make) -> None:
    fleet = make_fleet(warm_pools=[{"name": "idle", "desired_count": 0}])
    worker = fleet.start_worker(concurrency=2)
    uid = fleet.submit(example_pod("status"))
    fleet.wait_phase([uid], {Phase.RUNNING}, timeout=120)
    line = run_task(fleet, "vkec2.maintenance.status_log")
    for key in (
        "version",
        "os",
        "arch",
        "nodes",
        "pods",
        "warm_pools",
        "queues",
        "workers",
        "ec2_calls",
        "ec2_throttles",
    ):
        assert key in line, key
    assert line["pods"] == {"Running": 1} and line["nodes"] == 1 and line["workers"] == 1
    assert line["warm_pools"] == {"idle": {"Provisioning": 0, "Ready": 0, "Unhealthy": 0}}
    assert set(line["queues"]) == {"pods", "health", "maintenance"}
    assert line["ec2_calls"].get("RunInstances") == 1
    second = run_task(fleet, "vkec2.maintenance.status_log")
    assert second["ec2_calls"] == {} and second["interval_seconds"] is not None  # deltas, not totals
    logged = [
        json.loads(text[text.index("{") :])
        for text in worker.output().splitlines()
        if '"msg":"fleet status"' in text
    ]
    assert len(logged) == 2
