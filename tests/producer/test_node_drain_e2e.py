"""``vkec2 node drain NAME`` against the Kubernetes API double, real workers and the EC2 double.

A producer runs two pods on its node, then stops (as its StatefulSet would be scaled down); the
drain, run as the ``vkec2`` command, cordons the Node, deletes the pods through the workers, waits
for their instances to be terminated, and removes the pod objects, the Node, the records and the
node's entries in Redis.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

from tests.k8s.apiserver import FakeKubeApiServer
from tests.producer.conftest import StartProducer, assert_node_removed, pod_manifest
from tests.support.fleet import FleetHarness
from tests.support.services import wait_until
from vkec2.domain.models import Phase

Make = Callable[..., FleetHarness]
NODE = "vk-drain-0"


def drain(fleet: FleetHarness, apiserver: FakeKubeApiServer, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "vkec2.cli", "node", "drain", NODE, "--config", str(fleet.config_path)]
    return subprocess.run(
        [*argv, "--kube-host", apiserver.url, *extra],
        env=fleet.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_node_drain_deletes_the_pods_through_the_fleet_then_removes_the_node(
    make_fleet: Make, apiserver: FakeKubeApiServer, start_producer: StartProducer
) -> None:
    fleet = make_fleet()
    fleet.start_worker(concurrency=4)
    producer = start_producer(fleet, NODE)
    uids = {
        apiserver.create("pods", pod_manifest(f"d{i}", NODE, grace=1))["metadata"]["uid"] for i in range(2)
    }
    fleet.wait_phase(uids, {Phase.RUNNING}, timeout=90)
    wait_until(lambda: NODE in fleet.store.reconciled(), 10, "the producer's first reconcile")
    instances = {iid for uid in uids for iid in fleet.instances_by_uid()[uid]}
    producer.stop()

    done = drain(fleet, apiserver, "--timeout", "90")

    assert done.returncode == 0, done.stderr
    assert "2 pod(s) deleted" in done.stdout
    assert_node_removed(fleet, apiserver, NODE, uids, instances)


def test_node_drain_refuses_two_ways_to_reach_kubernetes(
    make_fleet: Make, apiserver: FakeKubeApiServer
) -> None:
    fleet = make_fleet()
    done = drain(fleet, apiserver, "--in-cluster")
    assert done.returncode == 2 and "choose one of" in done.stderr
