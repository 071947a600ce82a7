"""A producer drains its own node when its StatefulSet is scaled down, and only then.

The producer runs as pod ``vkec2-1`` of the StatefulSet ``vkec2`` (``POD_NAME``/``POD_NAMESPACE`` as
the chart passes them) against the API double, with real workers and the EC2 double. SIGTERM while
the StatefulSet keeps 2 replicas is a restart: the producer exits 0 and drains nothing, the pods keep
their instances, and a new producer takes the node over. After the StatefulSet is scaled to 1,
SIGTERM drains the node: the pods are deleted through the workers (their instances terminated), the
pod objects and the Node are removed, the records and the node's Redis entries forgotten, exit 0.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any

from kubernetes import client as k8s

from tests.k8s.apiserver import FakeKubeApiServer
from tests.producer.conftest import StartProducer, assert_node_removed, pod_manifest
from tests.support.fleet import FleetHarness
from tests.support.services import ManagedProcess, wait_until
from vkec2.domain.models import Phase

Make = Callable[..., FleetHarness]
NODE = "vk-scale-1"
POD_ENV = {"POD_NAME": "vkec2-1", "POD_NAMESPACE": "default"}


def statefulset(replicas: int) -> dict[str, Any]:
    labels = {"app.kubernetes.io/component": "producer"}
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "vkec2", "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "serviceName": "vkec2",
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "producer", "image": "vkec2:test"}]},
            },
        },
    }


def scale(apiserver: FakeKubeApiServer, replicas: int) -> None:
    """What ``kubectl scale`` amounts to: a new ``spec.replicas``, through the official client."""
    cfg = k8s.Configuration()
    cfg.host = apiserver.url
    with k8s.ApiClient(cfg) as api_client:
        apps = k8s.AppsV1Api(api_client)
        current = apps.read_namespaced_stateful_set("vkec2", "default")
        current.spec.replicas = replicas
        apps.replace_namespaced_stateful_set("vkec2", "default", current)


def sigterm(producer: ManagedProcess, timeout: float) -> int:
    os.kill(producer.pid, signal.SIGTERM)
    assert producer.proc is not None
    return producer.proc.wait(timeout)


def test_restart_keeps_the_pods_and_scale_down_drains_the_node(
    make_fleet: Make, apiserver: FakeKubeApiServer, start_producer: StartProducer
) -> None:
    fleet = make_fleet()
    fleet.start_worker(concurrency=4)
    apiserver.create("statefulsets", statefulset(2))
    producer = start_producer(fleet, NODE, env=POD_ENV)
    uids = {
        apiserver.create("pods", pod_manifest(f"s{i}", NODE, grace=1))["metadata"]["uid"] for i in range(2)
    }
    fleet.wait_phase(uids, {Phase.RUNNING}, timeout=90)
    wait_until(lambda: NODE in fleet.store.reconciled(), 10, "the producer's first reconcile")
    instances = {iid for uid in uids for iid in fleet.instances_by_uid()[uid]}
    assert len(instances) == 2

    # A restart (the StatefulSet keeps 2 replicas): nothing is drained.
    assert sigterm(producer, 30) == 0, producer.output()[-4000:]
    assert "not draining node" in producer.output() and "keeps 2 replicas" in producer.output()
    node = apiserver.get("nodes", NODE)
    assert node is not None and not node["spec"].get("unschedulable")
    assert {p["metadata"]["uid"] for p in apiserver.list_objects("pods")} == uids
    assert all((r := fleet.store.get(uid)) is not None and r.phase is Phase.RUNNING for uid in uids)
    live = fleet.instances_by_uid()
    assert instances == {iid for uid in uids for iid in live[uid]}

    # Back again, then scaled down to 1: SIGTERM drains vkec2-1's node before the producer exits.
    producer = start_producer(fleet, NODE, "--drain-timeout", "90", env=POD_ENV)
    scale(apiserver, 1)
    assert sigterm(producer, 150) == 0, producer.output()[-4000:]
    assert "scaled down to 1; this is ordinal 1" in producer.output()

    assert_node_removed(fleet, apiserver, NODE, uids, instances)
    terminated = fleet.instances(("shutting-down", "terminated"))
    assert instances <= {i["InstanceId"] for i in terminated}
