"""The epoch gates of orphan GC and warm-pool shrinking, and the warm-pool slot floor.

The passes run on the Redis store (a private server per test, ``redis_url``) and the EC2 fake: what
they destroy depends on what Redis knows, which is exactly what a Redis that lost its data gets
wrong (vkec2/fleet/epochgate.py).
"""

from __future__ import annotations

from tests.support.fakeagents import FakeAgents
from tests.support.fakes import FakeEc2
from tests.unit.fleet.world import pod, settings
from vkec2.contract import TAG_NODE, TAG_POD_UID, TAG_POOL, TAG_POOL_STATE
from vkec2.domain.instances import pool_token
from vkec2.fleet.gc import OrphanGc
from vkec2.fleet.warmpool import WarmPools
from vkec2.store.redis_store import Store

OLD = "2024-01-01T00:00:00+00:00"  # launched long before gc.grace_seconds


def orphan(ec2: FakeEc2, node: str = "vk-a", uid: str = "gone-uid") -> str:
    return str(ec2.add(tags={TAG_POD_UID: uid, TAG_NODE: node}, launch_time=OLD)["InstanceId"])


def two_passes(store: Store, ec2: FakeEc2) -> list[str]:
    gc = OrphanGc(settings(gc={"grace_seconds": 0}), store, ec2)
    first, second = gc.run(), gc.run()
    assert not first.terminated
    return second.terminated


def test_gc_skips_while_redis_has_no_epoch(store: Store) -> None:
    ec2 = FakeEc2("unit")
    orphan(ec2)
    report = OrphanGc(settings(), store, ec2).run()
    assert "no epoch" in report.skipped and not ec2.terminated()
    assert "DescribeInstances" not in ec2.actions()  # nothing is even listed


def test_gc_skips_while_a_registered_node_has_not_reconciled_since_the_epoch(store: Store) -> None:
    ec2 = FakeEc2("unit")
    orphan(ec2)
    epoch = store.ensure_epoch()
    store.mark_reconciled("vk-a", epoch)
    store.put_desired(pod(uid="u-b"), "vk-b")  # vk-b is registered, never reconciled at this epoch
    gc = OrphanGc(settings(gc={"grace_seconds": 0}), store, ec2)
    report = gc.run()
    assert "vk-b" in report.skipped and not ec2.terminated()
    store.mark_reconciled("vk-b", epoch)
    assert gc.run().skipped == ""


def test_gc_never_takes_an_instance_of_a_node_not_reconciled_at_the_epoch(store: Store) -> None:
    ec2 = FakeEc2("unit")
    epoch = store.ensure_epoch()
    store.mark_reconciled("vk-a", epoch)
    of_a = orphan(ec2, "vk-a")
    of_c = orphan(ec2, "vk-c", uid="live-on-c")  # vk-c has not re-registered since the loss
    store.redis.hset(store.keys.reconciled(), "vk-c", "an-older-epoch")
    assert two_passes(store, ec2) == [of_a]
    assert ec2.state(of_c) == "running"


def test_gc_collects_what_a_removed_node_left_behind(store: Store) -> None:
    ec2 = FakeEc2("unit")
    epoch = store.ensure_epoch()
    store.mark_reconciled("vk-a", epoch)
    store.mark_reconciled("vk-d", epoch)
    left = orphan(ec2, "vk-d", uid="drained-pod")
    store.forget_node("vk-d")  # vkec2 node drain
    assert two_passes(store, ec2) == [left]
    store.mark_reconciled("vk-d", epoch)  # the node registers again: no longer removed
    assert store.removed_nodes() == set()


def test_gc_after_the_epoch_changed_waits_for_every_node_again(store: Store) -> None:
    ec2 = FakeEc2("unit")
    store.mark_reconciled("vk-a", store.ensure_epoch())
    store.redis.delete(store.keys.epoch())  # the data loss, as far as the epoch is concerned
    new = store.ensure_epoch()
    orphan(ec2)
    assert "vk-a" in OrphanGc(settings(), store, ec2).run().skipped
    store.mark_reconciled("vk-a", new)
    assert len(two_passes(store, ec2)) == 1


def pools_settings(desired: int) -> dict[str, object]:
    return {"warm_pools": [{"name": "wp", "desired_count": desired}]}


def pool_members(ec2: FakeEc2, n: int) -> list[str]:
    return [
        str(ec2.add(tags={TAG_POOL: "wp", TAG_POOL_STATE: "Ready"}, launch_time=OLD)["InstanceId"])
        for _ in range(n)
    ]


def test_pool_surplus_is_kept_until_every_node_reconciled(store: Store) -> None:
    ec2 = FakeEc2("unit")
    pool_members(ec2, 3)
    store.put_desired(pod(uid="u-a"), "vk-a")  # a registered node, not reconciled: no epoch yet
    pools = WarmPools(settings(**pools_settings(1)), store, ec2, FakeAgents())
    report = pools.reconcile_all()[0]
    assert report.terminated == [] and report.ready == 3
    store.mark_reconciled("vk-a", store.ensure_epoch())
    assert len(pools.reconcile_all()[0].terminated) == 2


def test_pool_slots_start_above_the_highest_slot_in_members_tokens(store: Store) -> None:
    ec2 = FakeEc2("unit")
    pools = WarmPools(settings(**pools_settings(2)), store, ec2, FakeAgents())
    scope = pools._scope("wp")
    ec2.add(tags={TAG_POOL: "wp", TAG_POOL_STATE: "Ready"}, client_token=pool_token(scope, 7))
    # Redis lost the slot counter: without the floor the next launch would send slot 1 again.
    pools.reconcile_all()
    sent = [args["ClientToken"] for args in ec2.calls_of("RunInstances")]
    assert sent == [pool_token(scope, 8)]
