"""``kubectl top`` end to end: the real producer's kubelet API reports what the pods' agents measure.

A standalone producer (``vkec2 producer --manifests``) serves the kubelet API on a free loopback
port (client certificates of a test CA, as the API server's kubelet client presents them); its two
pods run through a real Celery worker on the AWS-like EC2 double onto the agent simulator, whose
containers use the CPU and memory their ``sim.vkec2.io/*`` annotations say. A metrics-server
stand-in (:mod:`tests.support.metrics_client`) scrapes ``/metrics/resource`` twice, as
metrics-server does, and prints ``kubectl top pod``; ``/stats/summary`` and ``/metrics`` are read
in between.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from producer.standalone import parse_manifest
from tests.producer.conftest import StartProducer
from tests.producer.test_kubelet_api import Pki
from tests.support.fleet import FleetHarness
from tests.support.kubelet import Api
from tests.support.metrics_client import Scrape, from_resource_metrics, from_summary, pod_usage, top_pods
from tests.support.services import free_port, port_open, wait_until
from vkec2.ca import FleetCA
from vkec2.domain.models import Phase

NODE = "vk-stats-0"
PODS = """\
apiVersion: v1
kind: Pod
metadata:
  name: web-0
  annotations: {sim.vkec2.io/cpu-millicores: "3", sim.vkec2.io/memory-bytes: "12582912"}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{name: main, image: sim, command: [sleep, "3600"]}]
---
apiVersion: v1
kind: Pod
metadata:
  name: worker
  annotations: {sim.vkec2.io/cpu-millicores: "250", sim.vkec2.io/memory-bytes: "33554432"}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: main, image: sim, command: [sleep, "3600"]}
  - {name: sidecar, image: sim, command: [sleep, "3600"]}
"""


def test_kubectl_top_from_the_kubelet_api_of_a_running_fleet(
    make_fleet: Callable[..., FleetHarness], start_producer: StartProducer, tmp_path: Path
) -> None:
    fleet = make_fleet()
    fleet.start_worker(concurrency=2)
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "pods.yaml").write_text(PODS)
    uids = {p["metadata"]["uid"] for p in parse_manifest("pods.yaml", PODS, NODE)}
    (tmp_path / "pki").mkdir()
    pki = Pki(FleetCA.create("test cluster CA"), tmp_path / "pki")
    serving = pki.ca.issue_agent_server_cert("kubelet", ips=["127.0.0.1"])
    port = free_port()
    producer = start_producer(
        fleet,
        NODE,
        "--kubelet-port",
        str(port),
        "--kubelet-cert",
        pki.write("kubelet.crt", serving.cert_pem),
        "--kubelet-key",
        pki.write("kubelet.key", serving.key_pem),
        "--kubelet-client-ca",
        pki.write("ca.crt", pki.ca.cert_pem),
        manifests=manifests,
    )
    api = Api(port, pki.client_context())
    wait_until(lambda: port_open(port) or not producer.alive(), 30, "the kubelet API to listen")
    fleet.wait_phase(uids, {Phase.RUNNING}, timeout=60)

    def scrape() -> str:
        status, body = api.get("/metrics/resource")
        assert status == 200, body
        return body.decode()

    first = from_resource_metrics(scrape())
    assert set(first) == {("default", "web-0"), ("default", "worker")} and set(
        first["default", "worker"]
    ) == {
        "main",
        "sidecar",
    }
    # The next scrape after the cache expired: newer timestamps on every container.
    stamp = first["default", "web-0"]["main"].timestamp
    latest: list[Scrape] = []

    def newer() -> bool:
        latest.append(from_resource_metrics(scrape()))
        return latest[-1]["default", "web-0"]["main"].timestamp > stamp + 1

    wait_until(newer, 15, "a fresh scrape", interval=0.5)
    second = latest[-1]
    usage = pod_usage(first, second)
    assert top_pods(usage).splitlines() == [
        "NAME     CPU(cores)   MEMORY(bytes)",
        "web-0    3m           12Mi",
        "worker   500m         64Mi",
    ]

    status, body = api.get("/stats/summary")
    assert status == 200
    doc = json.loads(body)
    assert doc["node"]["nodeName"] == NODE and len(doc["pods"]) == 2
    assert {p["podRef"]["uid"] for p in doc["pods"]} == uids
    node_cpu = doc["node"]["cpu"]["usageCoreNanoSeconds"]
    assert node_cpu > sum(c["cpu"]["usageCoreNanoSeconds"] for p in doc["pods"] for c in p["containers"])
    assert set(from_summary(doc)) == set(second)
    status, body = api.get("/metrics")
    lines = body.decode().splitlines()
    assert status == 200 and "kubelet_running_pods 2.0" in lines
    assert 'kubelet_running_containers{container_state="running"} 3.0' in lines
    assert f'kubelet_node_name{{node="{NODE}"}} 1.0' in lines
