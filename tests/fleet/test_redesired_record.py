"""A pod desired again after its delete finished starts a fresh life without the domain's LIFE_FIELDS.

:data:`vkec2.domain.phases.LIFE_FIELDS` is the one home of the fields a new life starts without;
the store's Lua (``_PUT_DESIRED``) must drop those and no others, from every final phase.
"""

from __future__ import annotations

import uuid

import pytest

from tests.support.fleet import bare_pod
from vkec2.domain import phases
from vkec2.domain.phases import Phase
from vkec2.store.redis_store import Store


@pytest.mark.parametrize("final", sorted(phases.FINAL_PHASES))
def test_a_redesired_record_drops_exactly_the_life_fields(store: Store, final: Phase) -> None:
    uid = str(uuid.uuid4())
    store.put_desired(bare_pod(uid), "n")
    lived = {
        "instance": {"InstanceId": "i-1"},
        "instance_id": "i-1",
        "endpoint": "10.0.0.1:50051",
        "launched_at": 1.0,
        "launch_batch": "b-1",
        "launch_slot": 1.5,
        "next_task": "t-1",
        "reason": "Done",
        "message": "it ran",
        "conditions": [{"type": "Ready", "status": "True"}],
        "container_statuses": [{"name": "c"}],
        "health": {"failures": 1},
        "finished_at": 4.0,
        "released_at": 5.0,
        "grace_deadline": 6.0,
        "deletion_grace": 7.0,
        "running_at": 2.0,
        "launching_at": 3.0,
        "attempt": 2,
        "host_pool": "macs",
        "host_id": "h-0123456789abcdef0",
    }
    assert set(phases.LIFE_FIELDS) <= set(lived)
    with store.locked(uid) as lock:
        lock.write(lived)
    store.mark_deleted(uid)
    with store.locked(uid) as lock:
        lock.write({"phase": final.value})
    store.put_desired(bare_pod(uid), "n")
    raw = store.redis.hgetall(store.keys.pod(uid))
    dropped = {name for name in lived if name not in raw}
    assert dropped == set(phases.LIFE_FIELDS)
    rec = store.get(uid)
    assert rec is not None and rec.phase is Phase.PENDING and rec.attempt == 3 and not rec.deleted
