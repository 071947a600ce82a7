"""``vkec2_queue_length{queue}``: the Celery queues' Redis lists, counted at scrape time through the store."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from vkec2 import contract
from vkec2.observability.queues import QueueLengthCollector
from vkec2.store.redis_store import Store


def _scrape(collector: QueueLengthCollector) -> str:
    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry).decode()


def test_the_gauge_counts_the_queue_lists_of_this_cluster_at_each_scrape(store: Store) -> None:
    prefix = store.keys.celery_prefix()
    store.redis.rpush(f"{prefix}pods", "m1", "m2")
    store.redis.rpush(f"{prefix}pods\x06\x169", "urgent")  # a priority list of the same queue
    store.redis.rpush(f"{prefix}health", "h1")
    store.redis.rpush("vkec2:another-cluster:celery:pods", *["x"] * 5)  # not ours
    collector = QueueLengthCollector(lambda: store.queue_depths(contract.QUEUES))

    text = _scrape(collector)
    assert 'vkec2_queue_length{queue="pods"} 3.0' in text
    assert 'vkec2_queue_length{queue="health"} 1.0' in text
    assert 'vkec2_queue_length{queue="maintenance"} 0.0' in text

    store.redis.lpop(f"{prefix}pods")  # read afresh at every scrape, not cached
    assert 'vkec2_queue_length{queue="pods"} 2.0' in _scrape(collector)


def test_a_failing_read_leaves_the_gauge_out_and_the_scrape_answering() -> None:
    def broken() -> dict[str, int]:
        raise ConnectionError("redis down")

    text = _scrape(QueueLengthCollector(broken))
    assert "vkec2_queue_length{" not in text
