"""The due times of pod steps in flight against a real Redis (vkec2/store/due.py, the pods part's writes)."""

from __future__ import annotations

import time
import uuid

import pytest

from tests.support.fleet import bare_pod
from vkec2.broker.app import make_app
from vkec2.config import Settings
from vkec2.contract import POD_CREATE, POD_DELETE, PODS_QUEUE, pod_task_kwargs
from vkec2.domain.models import DueStep
from vkec2.errors import StaleFence
from vkec2.store.redis_store import Store


def due(store: Store, uid: str) -> tuple[float, DueStep] | None:
    return store.due_steps().get(uid)


def test_a_chain_makes_its_pod_due_each_step_and_nothing_once_it_ends(store: Store) -> None:
    uid = str(uuid.uuid4())
    before = time.time()
    generation = store.put_desired(bare_pod(uid), "n")
    at, step = due(store, uid) or (0.0, None)
    assert step == DueStep(uid, POD_CREATE, generation) and before <= at <= time.time()
    store.put_desired(bare_pod(uid), "n")  # an update of a Pending pod: its chain's step stays due as it was
    assert due(store, uid) == (at, step)

    with store.locked(uid) as lock:
        lock.schedule_next("task-2", DueStep(uid, POD_CREATE, generation), at + 30)
    rec = store.get(uid)
    assert rec is not None and rec.next_task == "task-2"
    assert due(store, uid) == (at + 30, DueStep(uid, POD_CREATE, generation))

    with store.locked(uid) as old:
        pass
    with store.locked(uid):  # took over: the old fence may neither move nor clear the due step
        with pytest.raises(StaleFence):
            old.schedule_next("task-3", DueStep(uid, POD_CREATE), at + 60)
        assert not old.finish_chain(POD_CREATE)
    assert due(store, uid) == (at + 30, DueStep(uid, POD_CREATE, generation))

    deleted = store.mark_deleted(uid)
    _, step = due(store, uid) or (0.0, None)
    assert step == DueStep(uid, POD_DELETE, deleted)
    with store.locked(uid) as lock:
        assert not lock.finish_chain(POD_CREATE)  # a create that stops for the delete leaves it due
        assert due(store, uid) is not None
        assert lock.finish_chain(POD_DELETE)
    assert due(store, uid) is None

    store.mark_deleted(uid)
    store.forget(uid)
    assert store.due_steps() == {}


def test_claims_take_overdue_free_steps_once_and_read_the_queue_age(store: Store, redis_url: str) -> None:
    late, busy, gone, fresh = (str(uuid.uuid4()) for _ in range(4))
    for uid in (late, busy, gone, fresh):
        store.put_desired(bare_pod(uid), "n")
    now = time.time()
    for uid in (late, busy, gone):
        store.expect_step(DueStep(uid, POD_CREATE, 1), now - 60)
    store.redis.delete(store.keys.pod(gone))  # a record dropped behind the due set's back
    assert store.postpone(fresh, POD_CREATE, now + 300) and not store.postpone(fresh, POD_DELETE, 0)

    with store.locked(busy):
        claimed = store.claim_due(now - 10, now, lambda n: 20.0 * (n + 1))
    assert claimed == [DueStep(late, POD_CREATE, 1, 0)]
    assert due(store, late) == (now + 20.0, DueStep(late, POD_CREATE, 1, 1))
    assert gone not in store.due_steps()  # dropped, never published
    assert store.claim_due(now - 10, now, lambda n: 20.0) == [DueStep(busy, POD_CREATE, 1, 0)]
    assert store.claim_due(now - 10, now, lambda n: 20.0) == []  # claimed once, not twice

    assert store.oldest_queued_at(PODS_QUEUE) is None
    app = make_app(Settings.model_validate({"redis_url": redis_url, "cluster_name": store.cluster}))
    sent = time.time()
    for uid in (late, busy):
        app.send_task(POD_CREATE, kwargs=pod_task_kwargs(uid))
    oldest = store.oldest_queued_at(PODS_QUEUE)
    assert oldest is not None and sent <= oldest <= time.time()
    app.close()
