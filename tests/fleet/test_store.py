"""The Redis state store against a real Redis: fencing, locks, outbox atomicity, desired-state writes."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import pytest

from tests.support.fleet import bare_pod
from tests.support.services import wait_until
from vkec2.domain.models import Phase, StatusEvent
from vkec2.errors import LockBusy, StaleFence, Vkec2Error
from vkec2.store.redis_store import Store


def test_records_are_keyed_by_uid_and_indexed_by_node(store: Store) -> None:
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    store.put_desired(bare_pod(a, "same-name"), "node-a")
    store.put_desired(bare_pod(b, "same-name"), "node-b")
    assert store.uids() == {a, b}
    assert store.uids("node-a") == {a}
    assert store.nodes() == {"node-a", "node-b"}
    rec = store.get(a)
    assert rec is not None and rec.phase is Phase.PENDING and rec.namespace == "ns" and rec.node == "node-a"
    assert all(str(k).startswith(store.keys.prefix) for k in store.redis.keys("*"))


def test_generation_bumps_on_every_desired_write_and_delete(store: Store) -> None:
    uid = str(uuid.uuid4())
    assert store.put_desired(bare_pod(uid), "n") == 1
    assert store.put_desired(bare_pod(uid), "n") == 2
    assert store.mark_deleted(uid) == 3
    assert store.mark_deleted(str(uuid.uuid4())) is None
    rec = store.get(uid)
    assert rec is not None and rec.deleted


def test_a_deleted_uid_cannot_be_desired_again_until_it_is_finished(store: Store) -> None:
    uid = str(uuid.uuid4())
    store.put_desired(bare_pod(uid), "n")
    store.mark_deleted(uid)
    with pytest.raises(Vkec2Error) as err:
        store.put_desired(bare_pod(uid), "n")
    assert err.value.reason == "PodTerminating"
    with store.locked(uid) as lock:
        lock.write({"phase": Phase.TERMINATED.value, "instance_id": "i-1"})
    store.put_desired(bare_pod(uid), "n")
    rec = store.get(uid)
    assert rec is not None and rec.phase is Phase.PENDING and not rec.deleted and rec.instance_id == ""


def test_lock_is_exclusive_and_each_holder_gets_a_higher_fence(store: Store) -> None:
    uid = str(uuid.uuid4())
    store.put_desired(bare_pod(uid), "n")
    with store.locked(uid) as first:
        with pytest.raises(LockBusy), store.locked(uid):
            pass
        assert first.extend()
    with store.locked(uid) as second:
        assert second.fence == first.fence + 1


def test_write_with_a_stale_fence_is_refused_and_changes_nothing(store: Store) -> None:
    uid = str(uuid.uuid4())
    store.put_desired(bare_pod(uid), "n")
    with store.locked(uid, ttl_ms=50) as stale:
        pass
    with store.locked(uid) as fresh:
        fresh.write({"phase": Phase.BOOTING.value})
    event = StatusEvent(uid=uid, namespace="ns", name="p", phase=Phase.FAILED)
    with pytest.raises(StaleFence):
        stale.write({"phase": Phase.FAILED.value}, event, "n")
    rec = store.get(uid)
    assert rec is not None and rec.phase is Phase.BOOTING
    assert store.outbox_events("n") == []


def test_expired_lock_can_be_taken_over_and_the_old_holder_is_fenced_out(store: Store) -> None:
    uid = str(uuid.uuid4())
    store.put_desired(bare_pod(uid), "n")
    with store.locked(uid, ttl_ms=20) as stalled:
        wait_until(lambda: not store.redis.exists(store.keys.lock(uid)), 5, "the lock to expire")
        with store.locked(uid) as other:
            assert other.fence == stalled.fence + 1
            assert not stalled.extend()
            with pytest.raises(StaleFence):
                stalled.write({"phase": Phase.FAILED.value})


def test_the_guard_extends_a_held_lock_and_refuses_a_lost_one(store: Store) -> None:
    uid = str(uuid.uuid4())
    store.put_desired(bare_pod(uid), "n")
    with store.locked(uid, ttl_ms=300) as held:
        held.guard()
        assert int(store.redis.pttl(store.keys.lock(uid))) > 200  # extended by its TTL again
    with store.locked(uid, ttl_ms=20) as stalled:
        wait_until(lambda: not store.redis.exists(store.keys.lock(uid)), 5, "the lock to expire")
        with pytest.raises(StaleFence):
            stalled.guard()  # expired: no side effect, even before anyone took the pod over
        with store.locked(uid) as other:
            with pytest.raises(StaleFence):
                stalled.guard()
            other.guard()
    with store.locked(uid) as holder:
        store.redis.hincrby(store.keys.pod(uid), "fence", 1)  # the record moved on (taken and lost)
        with pytest.raises(StaleFence):
            holder.guard()


def test_a_held_lock_is_kept_alive_past_its_ttl_and_let_go_after_its_maximum_hold(store: Store) -> None:
    uid = str(uuid.uuid4())
    store.put_desired(bare_pod(uid), "n")
    lock_key = store.keys.lock(uid)
    with store.locked(uid, ttl_ms=300, max_hold_s=30):
        started = time.monotonic()

        def alive_for_five_ttls() -> bool:
            assert store.redis.exists(lock_key), "the heartbeat let a held lock expire"
            return time.monotonic() - started > 1.5

        wait_until(alive_for_five_ttls, 10, "five lock TTLs to pass", interval=0.05)
    assert not store.redis.exists(lock_key) and store.lock_heartbeat.held() == 0
    with store.locked(uid, ttl_ms=300, max_hold_s=0.5):
        wait_until(lambda: not store.redis.exists(lock_key), 10, "the lock past its maximum hold to expire")
        assert store.lock_heartbeat.held() == 0


def test_the_lock_of_a_killed_holder_expires_within_its_ttl(store: Store, redis_url: str) -> None:
    uid = str(uuid.uuid4())
    store.put_desired(bare_pod(uid), "n")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_AND_WAIT, redis_url, store.cluster, uid],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(LockBusy), store.locked(uid):
            pass
        holder.kill()  # SIGKILL: its heartbeat dies with it
        holder.wait(10)
        wait_until(
            lambda: not store.redis.exists(store.keys.lock(uid)), 10, "the dead holder's lock to expire"
        )
        with store.locked(uid) as lock:
            assert lock.fence == 2
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)


HOLD_AND_WAIT = """
import sys, threading
from vkec2.store.redis_store import Store
store = Store.from_url(sys.argv[1], sys.argv[2])
with store.locked(sys.argv[3], ttl_ms=1000, max_hold_s=600):
    print("held", flush=True)
    threading.Event().wait()
"""


def test_state_write_and_outbox_event_are_atomic(store: Store) -> None:
    uid = str(uuid.uuid4())
    store.put_desired(bare_pod(uid), "node-x")
    with store.locked(uid) as lock:
        lock.write(
            {"phase": Phase.RUNNING.value, "instance_id": "i-abc", "instance": {"InstanceId": "i-abc"}},
            StatusEvent(
                uid=uid,
                namespace="ns",
                name="p",
                phase=Phase.RUNNING,
                reason="Started",
                instance_id="i-abc",
                conditions=[{"type": "Ready", "status": "True"}],
            ),
            "node-x",
        )
    rec = store.get(uid)
    assert rec is not None and rec.phase is Phase.RUNNING and rec.instance == {"InstanceId": "i-abc"}
    [(_, event)] = store.outbox_events("node-x")
    assert event.phase is Phase.RUNNING and event.reason == "Started" and event.instance_id == "i-abc"
    assert event.conditions == [{"type": "Ready", "status": "True"}]


def test_warm_pool_claim_is_atomic_and_returns_the_description(store: Store) -> None:
    store.redis.sadd(store.keys.pool_ready("mac"), "i-1", "i-2")
    store.redis.hset(
        store.keys.pool_instances("mac"),
        mapping={"i-1": '{"InstanceId": "i-1"}', "i-2": '{"InstanceId": "i-2"}'},
    )
    claims = [store.claim_ready("mac") for _ in range(3)]
    assert sorted(c[0] for c in claims if c) == ["i-1", "i-2"]
    assert claims[2] is None
    assert store.redis.hlen(store.keys.pool_instances("mac")) == 0


def test_forget_removes_the_record_and_its_indexes(store: Store) -> None:
    uid = str(uuid.uuid4())
    store.put_desired(bare_pod(uid), "n")
    store.forget(uid)
    assert store.get(uid) is None and store.uids() == set() and store.uids("n") == set()
