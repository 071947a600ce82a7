"""Warm pools end to end: a pool of 5 stays at 5 Ready across claims, a restart rebuilds it from EC2
tags without launching, and a pod whose pool is empty gets a cold launch."""

from __future__ import annotations

from collections.abc import Callable

from tests.maintenance.conftest import Make, run_task
from tests.support.ec2proxy import Ec2Proxy
from tests.support.fleet import FleetHarness, example_pod
from vkec2.contract import TAG_POD_UID, TAG_POOL, TAG_POOL_STATE
from vkec2.domain.models import Phase

RECONCILE = "vkec2.maintenance.warm_pools"


def reconcile_until(fleet: FleetHarness, done: Callable[[], bool], what: str, rounds: int = 60) -> None:
    for _ in range(rounds):
        run_task(fleet, RECONCILE)
        if done():
            return
    raise AssertionError(f"after {rounds} reconciles: {what}")


def launched(proxy: Ec2Proxy) -> int:
    """Instances EC2 launched (a RunInstances the double throttled at random launched none)."""
    return len(proxy.log.launched())


def pool_tags(fleet: FleetHarness, pool: str) -> dict[str, str]:
    """Instance ID -> pool-state tag of the pool's unclaimed members, read from EC2 (moto)."""
    out = {}
    for inst in fleet.instances():
        tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
        if tags.get(TAG_POOL) == pool and not tags.get(TAG_POD_UID):
            out[inst["InstanceId"]] = tags.get(TAG_POOL_STATE, "")
    return out


def ready(fleet: FleetHarness, pool: str) -> set[str]:
    return {str(i) for i in fleet.store.redis.smembers(fleet.store.keys.pool_ready(pool))}


def test_pool_of_five_stays_full_across_claims_and_rebuilds_from_tags(
    make_fleet: Make, ec2_proxy: Ec2Proxy
) -> None:
    fleet = make_fleet(warm_pools=[{"name": "warm", "desired_count": 5}])
    fleet.start_worker(concurrency=4)

    def full() -> bool:
        tags = pool_tags(fleet, "warm")
        return len(ready(fleet, "warm")) == 5 and sorted(tags.values()) == ["Ready"] * 5

    reconcile_until(fleet, full, "the pool never had 5 Ready instances")
    first = ready(fleet, "warm")
    assert launched(ec2_proxy) == 5

    uids = [fleet.submit(example_pod(f"claims-{i}")) for i in range(3)]  # the default pool is "warm"
    fleet.wait_phase(uids, {Phase.RUNNING}, timeout=120)
    claimed = {fleet.record(u).instance_id for u in uids}
    assert claimed <= first, "pods did not get warm instances"
    assert launched(ec2_proxy) == 5, "a pod was cold-launched although the pool had instances"
    reconcile_until(fleet, full, "the pool was not refilled to 5 Ready")
    assert not (ready(fleet, "warm") & claimed)
    assert launched(ec2_proxy) == 8

    # Restart with the Redis mirror lost: the pool is rebuilt from tags, nothing launched.
    for worker in fleet.workers:
        worker.stop()
    keys = fleet.store.keys
    fleet.store.redis.delete(keys.pool_ready("warm"), keys.pool_instances("warm"), keys.pool_known("warm"))
    before = set(pool_tags(fleet, "warm"))
    fleet.start_worker(concurrency=4)
    reconcile_until(fleet, full, "the pool was not rebuilt")
    assert ready(fleet, "warm") == before
    assert launched(ec2_proxy) == 8 and not ec2_proxy.log.events("TerminateInstances")


def test_empty_pool_falls_back_to_a_cold_launch(make_fleet: Make, ec2_proxy: Ec2Proxy) -> None:
    fleet = make_fleet(warm_pools=[{"name": "empty", "desired_count": 0}])
    fleet.start_worker(concurrency=2)
    assert run_task(fleet, RECONCILE)[0]["ready"] == 0
    uid = fleet.submit(example_pod("cold", annotations={"compute.amazonaws.com/warm-pool": "empty"}))
    fleet.wait_phase([uid], {Phase.RUNNING}, timeout=120)
    assert launched(ec2_proxy) == 1
    assert fleet.instances_by_uid()[uid] == [fleet.record(uid).instance_id]
