"""A pod task's step lock against a real Redis: the record with the lock, deferred writes sent with
the next guard or the step's end (with the due step and the release in one call), fencing kept;
the outbox trim of settled entries; what a record keeps of an instance description."""

from __future__ import annotations

import time
import uuid

import pytest

from tests.support.fleet import bare_pod
from vkec2.contract import POD_CREATE
from vkec2.domain.instances import FLEET_FIELDS
from vkec2.domain.models import DueStep, Phase, StatusEvent
from vkec2.errors import LockBusy, StaleFence, UnknownPod
from vkec2.store.redis_store import Store


def _pod(store: Store) -> str:
    uid = str(uuid.uuid4())
    store.put_desired(bare_pod(uid), "n")
    return uid


def _event(uid: str, phase: Phase) -> StatusEvent:
    return StatusEvent(uid=uid, namespace="ns", name="p", phase=phase)


def test_the_step_lock_comes_with_the_record_read_after_its_fence_was_taken(store: Store) -> None:
    uid = _pod(store)
    with store.step_locked(uid) as lock:
        assert lock.record is not None and lock.record.uid == uid and lock.record.fence == lock.fence
        with pytest.raises(LockBusy), store.step_locked(uid):
            pass
    with pytest.raises(UnknownPod), store.step_locked(str(uuid.uuid4())):
        pass


def test_writes_wait_for_the_guard_and_go_in_order_with_their_events(store: Store) -> None:
    uid = _pod(store)
    with store.step_locked(uid, ttl_ms=5000) as lock:
        lock.write({"phase": Phase.BOOTING.value, "endpoint": "a:1"}, _event(uid, Phase.BOOTING), "n")
        lock.write({"phase": Phase.LAUNCHING.value}, _event(uid, Phase.LAUNCHING), "n")
        assert store.get(uid).phase is Phase.PENDING  # type: ignore[union-attr]  # not sent yet
        store.redis.pexpire(store.keys.lock(uid), 100)
        lock.guard()  # before a side effect: sent, and the lock extended
        rec = store.get(uid)
        assert rec is not None and (rec.phase, rec.endpoint) == (Phase.LAUNCHING, "a:1")
        assert int(store.redis.pttl(store.keys.lock(uid))) > 1000
        lock.write({"phase": Phase.RUNNING.value}, _event(uid, Phase.RUNNING), "n")
    assert store.get(uid).phase is Phase.RUNNING  # type: ignore[union-attr]  # sent at the block's end
    assert not store.redis.exists(store.keys.lock(uid))  # and released
    phases = [e.phase for _, e in store.outbox_events("n")]
    assert phases == [Phase.BOOTING, Phase.LAUNCHING, Phase.RUNNING]


def test_schedule_next_sends_the_writes_the_due_step_and_the_release_together(store: Store) -> None:
    uid = _pod(store)
    at = time.time() + 30
    with store.step_locked(uid) as lock:
        lock.write({"phase": Phase.PROVISIONING.value}, _event(uid, Phase.PROVISIONING), "n")
        lock.schedule_next("task-2", DueStep(uid, POD_CREATE), at)
        assert not store.redis.exists(store.keys.lock(uid))  # another step may take the pod now
    rec = store.get(uid)
    assert rec is not None and (rec.phase, rec.next_task) == (Phase.PROVISIONING, "task-2")
    assert float(store.redis.zscore(store.keys.due(), uid) or 0) == pytest.approx(at)
    with store.step_locked(uid) as lock:
        assert lock.finish_chain(POD_CREATE)
    assert store.redis.zscore(store.keys.due(), uid) is None


def test_a_superseded_step_writes_nothing_and_learns_it_at_its_next_call(store: Store) -> None:
    uid = _pod(store)
    with store.step_locked(uid) as stale:
        store.redis.delete(store.keys.lock(uid))  # as if it expired: another step takes the pod
        with store.step_locked(uid) as fresh:
            fresh.write({"phase": Phase.BOOTING.value})
        stale.write({"phase": Phase.FAILED.value}, _event(uid, Phase.FAILED), "n")
        with pytest.raises(StaleFence):
            stale.guard()
        assert not stale.finish_chain(POD_CREATE)  # nothing to write: just not finished
    assert store.get(uid).phase is Phase.BOOTING  # type: ignore[union-attr]
    assert store.outbox_events("n") == []
    with store.step_locked(uid) as stale:
        store.redis.delete(store.keys.lock(uid))
        with store.step_locked(uid):
            pass
        stale.write({"phase": Phase.FAILED.value})
        with pytest.raises(StaleFence):
            stale.schedule_next("task-3", DueStep(uid, POD_CREATE), time.time())


def test_the_trim_drops_only_what_the_group_settled(store: Store) -> None:
    uid = _pod(store)
    store.outbox_ensure_group("n", "g")
    for phase in (Phase.PROVISIONING, Phase.BOOTING, Phase.LAUNCHING, Phase.RUNNING):
        with store.step_locked(uid) as lock:
            lock.write({"phase": phase.value}, _event(uid, phase), "n")
    first, second = store.outbox_read("n", "g", "c", ">", 2)
    store.outbox_ack("n", "g", first[0])
    assert store.outbox_trim("n", "g") == 1  # the second is pending, the last two unread
    entries = store.redis.xrange(store.keys.outbox("n")) or []
    assert next(i for i, _ in entries) == second[0]
    store.outbox_ack("n", "g", second[0])
    store.outbox_read("n", "g", "c", ">", 10)
    assert store.outbox_trim("n", "g") == 1  # the last two are pending now
    assert store.redis.xlen(store.keys.outbox("n")) == 2
    assert store.outbox_trim("n", "nobody") == 0


def test_a_record_keeps_only_the_fields_the_fleet_reads_of_an_instance(store: Store) -> None:
    uid = _pod(store)
    described = {
        "InstanceId": "i-0123456789abcdef0",
        "InstanceType": "m5.large",
        "Placement": {"AvailabilityZone": "us-west-2a"},
        "State": {"Name": "running"},
        "Tags": [{"Key": "k", "Value": "v"}],
        "BlockDeviceMappings": [{"DeviceName": "/dev/xvda"}],
        "NetworkInterfaces": [{"NetworkInterfaceId": "eni-1"}],
    }
    with store.step_locked(uid) as lock:
        lock.write({"instance": described, "instance_id": described["InstanceId"]})
    rec = store.get(uid)
    assert rec is not None and set(rec.instance) == set(described) & set(FLEET_FIELDS)
    assert rec.instance["Placement"] == {"AvailabilityZone": "us-west-2a"} and rec.instance_type == "m5.large"
