"""End to end: Redis loses its data (FLUSHALL) under a running fleet, and nothing but time is lost.

A standalone producer runs 50 pods from a manifest directory on real workers, EC2's AWS-like double
and the agent simulator, on a Redis of this test's own (it is flushed). After the flush the
producer's next epoch check (a short ``--lease-interval``) relists and rebuilds every record, each
rebuilt record adopts its pod's instance and finds its agent running it (row C27), a new pod runs,
and explicit orphan-GC passes terminate nothing of a live pod. The double's event log proves that no
instance of a running pod was terminated and that no ClientToken sent before the flush was sent
again.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from producer.standalone import parse_manifest
from tests.maintenance.conftest import run_task
from tests.producer.conftest import StartProducer
from tests.support.awslike import E2E_DEFAULT
from tests.support.ec2proxy import Ec2Proxy
from tests.support.fleet import FleetHarness, fleet_behind
from tests.support.services import ManagedProcess, start_redis, wait_until
from vkec2.domain.models import Phase

NODE = "vk-loss-0"
PODS = 50
LEASE_INTERVAL = 2.0
GC = "vkec2.maintenance.gc"


def manifest(names: list[str]) -> str:
    return "".join(
        f"---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n"
        f"  terminationGracePeriodSeconds: 1\n"
        f'  containers: [{{name: main, image: sim, command: [sleep, "3600"]}}]\n'
        for name in names
    )


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[str]:
    proc, url = start_redis(log_dir=str(tmp_path))
    yield url
    proc.stop()


def run_tokens(proxy: Ec2Proxy) -> set[str]:
    return {e.token for e in proxy.log.events("RunInstances") if e.token}


def test_flushall_under_50_running_pods_loses_no_instance_and_reuses_no_token(
    own_redis: str,
    ec2_proxy: Ec2Proxy,
    agent_sim: str,
    tmp_path: Path,
    start_producer: StartProducer,
) -> None:
    fleet: FleetHarness = fleet_behind(
        ec2_proxy, tmp_path, own_redis, agent_sim, {"gc": {"grace_seconds": 0}}, aws_like=E2E_DEFAULT
    )
    try:
        run_the_loss(fleet, ec2_proxy, tmp_path, start_producer)
    finally:
        fleet.stop()


def run_the_loss(fleet: FleetHarness, proxy: Ec2Proxy, tmp_path: Path, start_producer: StartProducer) -> None:
    fleet.start_worker(concurrency=8)
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    text = manifest([f"p{i:02d}" for i in range(PODS)])
    (manifests / "many.yaml").write_text(text)
    uids = {p["metadata"]["uid"] for p in parse_manifest("many.yaml", text, NODE)}
    producer: ManagedProcess = start_producer(
        fleet, NODE, "--lease-interval", str(LEASE_INTERVAL), manifests=manifests
    )
    fleet.wait_phase(uids, {Phase.RUNNING}, timeout=150)
    before = fleet.instances_by_uid()
    assert sorted(before) == sorted(uids) and all(len(ids) == 1 for ids in before.values())
    tokens_before = run_tokens(proxy)
    lost_at = time.time()

    fleet.store.redis.flushall()

    # Rebuilt within one lease interval (+ one manifest scan and the jitter): the records are back.
    wait_until(
        lambda: fleet.store.uids(NODE) == uids, LEASE_INTERVAL * 1.1 + 1.5, "the records to be rebuilt"
    )
    assert "Redis lost its data (epoch changed" in producer.output()
    fleet.wait_phase(uids, {Phase.RUNNING}, timeout=150)
    assert {uid: [fleet.record(uid).instance_id] for uid in uids} == before

    # One new pod runs, with a token of its own.
    new_text = manifest(["fresh"])
    (manifests / "fresh.yaml").write_text(new_text)
    (fresh,) = {p["metadata"]["uid"] for p in parse_manifest("fresh.yaml", new_text, NODE)}
    fleet.wait_phase([fresh], {Phase.RUNNING}, timeout=120)

    # Orphan GC, several passes: nothing of a live pod is a candidate.
    for _ in range(3):
        result = run_task(fleet, GC)
        assert result["skipped"] == "" and result["terminated"] == [] and result["candidates"] == 0

    after = fleet.instances_by_uid()
    assert {uid: ids for uid, ids in after.items() if uid in uids} == before
    terminated = {iid for e in proxy.log.events("TerminateInstances") for iid in e.terminated}
    assert not terminated & {iid for ids in before.values() for iid in ids}
    sent_since = {e.token for e in proxy.log.events("RunInstances") if e.token and e.at > lost_at}
    assert sent_since and not sent_since & tokens_before  # the new pod's launch, no old token
