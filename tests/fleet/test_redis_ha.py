"""End to end: a fleet on Redis Sentinel survives a fail-over in the middle of its work.

The fleet (real Celery workers and beat, the store, RedBeat) reaches Redis only through three
Sentinels of the test's own; in the middle of 50 creates the Sentinels promote the replica. The
workers' broker connections, the store's client and beat follow the new master; a message or a
write acknowledged by the old master just before the promotion may not have reached the replica
(asynchronous replication): the broker's redelivery and the health sweep resume a lost step, and
``redis_wait_replicas`` keeps a pod write from vanishing under a later one (docs/redis.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.awslike import E2E_DEFAULT
from tests.support.ec2proxy import Ec2Proxy
from tests.support.fleet import FleetHarness, example_pod, fleet_behind
from tests.support.sentinel import MASTER, SentinelGroup
from tests.support.services import wait_until
from vkec2.domain.models import Phase


@pytest.fixture
def sentinel_group(tmp_path: Path) -> Iterator[SentinelGroup]:
    group = SentinelGroup(tmp_path).start()
    yield group
    group.stop()


@pytest.mark.xdist_group("redis-ha")
def test_sentinel_failover_in_the_middle_of_50_creates_loses_nothing(
    sentinel_group: SentinelGroup, ec2_proxy: Ec2Proxy, agent_sim: str, tmp_path: Path
) -> None:
    # WAIT for the replica on every fenced write: without it, a write the old master acknowledged
    # but never replicated can vanish under a later one (a Running record without its instance).
    overrides = {"redis_sentinel_master": MASTER, "redis_wait_replicas": 1, "health": {"interval_seconds": 2}}
    fleet: FleetHarness = fleet_behind(
        ec2_proxy, tmp_path, sentinel_group.url, agent_sim, overrides, aws_like=E2E_DEFAULT
    )
    try:
        fleet.start_beat()
        fleet.start_worker(concurrency=8)
        uids = [fleet.submit(example_pod(f"ha-{i}")) for i in range(50)]

        def running() -> int:
            return sum(1 for uid in uids if (rec := fleet.store.get(uid)) and rec.phase is Phase.RUNNING)

        wait_until(lambda: running() >= 20, 90, "20 pods to run before the fail-over", interval=0.2)
        old = sentinel_group.master_port()
        new = sentinel_group.failover()
        assert new != old
        assert running() < 50, "the fail-over came after the work; make the test slower to create"

        fleet.wait_phase(uids, {Phase.RUNNING}, timeout=90)
        by_uid = fleet.instances_by_uid()
        assert sorted(by_uid) == sorted(uids)
        assert all(len(ids) == 1 for ids in by_uid.values()), {u: i for u, i in by_uid.items() if len(i) > 1}
        for uid in uids:
            assert fleet.record(uid).instance_id == by_uid[uid][0]
        assert fleet.store.address() == f"sentinel:{MASTER}/0"
        assert all(w.alive() for w in fleet.workers), "a worker or beat died in the fail-over"
    finally:
        fleet.stop()
