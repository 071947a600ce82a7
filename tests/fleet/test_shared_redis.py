"""End to end: two clusters on one Redis database keep to themselves.

Every key and channel of a cluster — the store's and RedBeat's, and kombu's queues, bindings,
unacknowledged messages, pidbox (control) and events — starts with ``vkec2:{cluster}:``, so each
cluster's worker runs only its own tasks, a ping (the producer's health probe) reaches only its
own workers, and deleting one cluster's keys leaves the other running.
"""

from __future__ import annotations

import redis

from producer.lease import HealthProbe
from tests.fleet.test_lifecycle_e2e import Make
from tests.support.fleet import example_pod
from tests.support.services import wait_until
from vkec2 import contract
from vkec2.domain.models import Phase


def _names(replies: list[dict[str, object]] | None) -> set[str]:
    return {name for reply in replies or [] for name in reply}


def test_two_clusters_on_one_redis_database_share_nothing(make_fleet: Make, redis_url: str) -> None:
    a, b = make_fleet(), make_fleet()
    a.start_worker(concurrency=2)
    b.start_worker(concurrency=2)
    a_uids = [a.submit(example_pod(f"a-{i}")) for i in range(3)]
    b_uids = [b.submit(example_pod(f"b-{i}")) for i in range(3)]
    a.wait_phase(a_uids, {Phase.RUNNING}, timeout=90)
    b.wait_phase(b_uids, {Phase.RUNNING}, timeout=90)

    # Each cluster's instances were launched by its own worker (tagged with its cluster) ...
    assert sorted(a.instances_by_uid()) == sorted(a_uids)
    assert sorted(b.instances_by_uid()) == sorted(b_uids)
    # ... which never ran a task of the other cluster.
    a_log, b_log = a.workers[0].output(), b.workers[0].output()
    assert a_uids[0] in a_log and b_uids[0] in b_log
    assert not any(uid in a_log for uid in b_uids) and not any(uid in b_log for uid in a_uids)

    # A ping reaches only the cluster's own workers.
    assert _names(a.app.control.ping(timeout=1)) == {f"w0-{a.cluster}@localhost"}
    assert _names(b.app.control.ping(timeout=1)) == {f"w0-{b.cluster}@localhost"}

    # Every key in the shared database belongs to one of the two clusters.
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    keys = set(client.scan_iter(count=1000))
    a_keys = {k for k in keys if k.startswith(f"vkec2:{a.cluster}:")}
    b_keys = {k for k in keys if k.startswith(f"vkec2:{b.cluster}:")}
    assert keys == a_keys | b_keys, sorted(keys - a_keys - b_keys)
    assert f"vkec2:{a.cluster}:celery:_kombu.binding.pods" in a_keys
    assert f"vkec2:{b.cluster}:celery:_kombu.binding.pods" in b_keys

    # Without a worker of its own, b's producer sees none, although a's still answers.
    b.workers[0].stop()
    health = HealthProbe(b.store, b.app).check()
    assert (health.ok, health.reason) == (False, "NoWorkers")
    assert HealthProbe(a.store, a.app).check().ok

    # Deleting b's keys (all of them, by prefix) leaves a running.
    for key in client.scan_iter(match=f"vkec2:{b.cluster}:*", count=1000):
        client.delete(key)
    client.close()
    late = a.submit(example_pod("a-late"))
    a.wait_phase([late], {Phase.RUNNING}, timeout=60)
    assert {rec.phase for rec in map(a.record, a_uids)} == {Phase.RUNNING}
    wait_until(lambda: bool(_names(a.app.control.ping(timeout=1))), 10, "a's worker to answer a ping")


def test_the_status_log_counts_only_its_own_clusters_queues(make_fleet: Make) -> None:
    a, b = make_fleet(), make_fleet()
    for _ in range(2):
        a.send("vkec2.pods.create", uid="queued")
    b.send(contract.STATUS_LOG)
    assert a.store.queue_depths(contract.QUEUES) == {"pods": 2, "health": 0, "maintenance": 0}
    assert b.store.queue_depths(contract.QUEUES) == {"pods": 0, "health": 0, "maintenance": 1}
