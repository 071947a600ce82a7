"""End to end: batched launches with real workers behind the AWS-like EC2, with a worker SIGKILLed.

40 pods created at once reach Running with a handful of RunInstances calls (``MaxCount`` = the
batch) instead of 40, each with exactly one instance carrying its pod tags and its batch tag,
although a worker is SIGKILLed while the batches go out; deleting them leaves no instance behind.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

from tests.support.ec2proxy import Ec2Proxy
from tests.support.fleet import FleetHarness, example_pod
from tests.support.services import wait_until
from vkec2.contract import TAG_LAUNCH_BATCH, TAG_POD_UID
from vkec2.domain.models import Phase

Make = Callable[..., FleetHarness]


def test_40_pods_launch_in_a_few_batched_calls_with_a_worker_killed(
    make_fleet: Make, ec2_proxy: Ec2Proxy
) -> None:
    # As deployed: beat resumes a chain whose message died with the worker before it was recorded.
    fleet = make_fleet(
        aws={"launch_batch_window_seconds": 1.0, "launch_batch_max": 10}, health={"interval_seconds": 2}
    )
    fleet.start_beat()
    doomed = fleet.start_worker(concurrency=4)
    fleet.start_worker(concurrency=4)
    uids = [fleet.submit(example_pod(f"batch-{i}")) for i in range(40)]

    def launching() -> bool:
        return any(fleet.record(u).launch_batch for u in uids)

    wait_until(launching, 60, "pods to join launch batches")
    doomed.kill(signal.SIGKILL)
    fleet.start_worker(concurrency=4)
    fleet.wait_phase(uids, {Phase.RUNNING}, timeout=180)

    launches = [e for e in ec2_proxy.log.run_requests() if e.launched]
    assert 4 <= len(launches) <= 12, [len(e.launched) for e in launches]  # not one call per pod
    instances = fleet.instances()
    assert sorted(i["InstanceId"] for i in instances) == sorted(fleet.record(u).instance_id for u in uids)

    def owner(instance: dict[str, Any]) -> str:
        return next((t["Value"] for t in instance.get("Tags", []) if t["Key"] == TAG_POD_UID), "")

    def tagged() -> bool:  # the pod tags follow the launch: written, not only pending
        return sorted(owner(i) for i in fleet.instances()) == sorted(uids)

    wait_until(tagged, 60, "every instance to carry its pod's tags")
    assert all(any(t["Key"] == TAG_LAUNCH_BATCH for t in i["Tags"]) for i in fleet.instances())
    assert {fleet.record(u).instance_id: u for u in uids} == {
        i["InstanceId"]: next(t["Value"] for t in i["Tags"] if t["Key"] == TAG_POD_UID)
        for i in fleet.instances()
    }

    for uid in uids:
        fleet.delete(uid)
    fleet.wait_phase(uids, {Phase.TERMINATED}, timeout=120)
    assert fleet.instances() == []
