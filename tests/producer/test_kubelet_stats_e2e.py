"""``kubectl top`` end to end: the real producer's kubelet API reports what the pods' agents measure.

The real producer in Kubernetes mode (against the API double) serves the kubelet API on a free
loopback port, authenticating client certificates of a test CA as the API server's kubelet client
presents them and authorizing each request with a SubjectAccessReview; its two pods run through a
real Celery worker on the AWS-like EC2 double onto the agent simulator, whose containers use the
CPU and memory their ``sim.vkec2.io/*`` annotations say. A metrics-server stand-in
(:mod:`tests.support.metrics_client`) scrapes ``/metrics/resource`` twice, as metrics-server does,
prints ``kubectl top pod`` itself, and hands the usage to the double's ``metrics.k8s.io``
(:mod:`tests.k8s.metrics_api`), which the real ``kubectl top pod`` then reads. ``/stats/summary``
and ``/metrics`` are checked against the same pods.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.k8s.apiserver import FakeKubeApiServer
from tests.k8s.kubelet_double import AccessRule
from tests.producer.conftest import StartProducer, pod_manifest
from tests.producer.test_kubelet_api import Pki
from tests.support.fleet import FleetHarness
from tests.support.kubectl_double import kubectl
from tests.support.kubelet import Api
from tests.support.metrics_client import (
    Scrape,
    container_usage,
    from_resource_metrics,
    from_summary,
    pod_usage,
    top_pods,
)
from tests.support.services import free_port, port_open, wait_until
from vkec2.ca import FleetCA
from vkec2.domain.models import Phase

NODE = "vk-stats-0"
MI = 1024 * 1024
KUBELET_CLIENT = "kube-apiserver-kubelet-client"


def _usage(millicores: int, memory: int) -> dict[str, str]:
    return {"sim.vkec2.io/cpu-millicores": str(millicores), "sim.vkec2.io/memory-bytes": str(memory)}


def _pods() -> list[dict[str, Any]]:
    web = pod_manifest("web-0", NODE, annotations=_usage(3, 12 * MI), grace=1)
    worker = pod_manifest("worker", NODE, annotations=_usage(250, 32 * MI), grace=1)
    worker["spec"]["containers"].append({"name": "sidecar", "image": "sim", "command": ["sleep", "3600"]})
    return [web, worker]


def _top(apiserver: FakeKubeApiServer, home: Path, *args: str) -> str:
    proc = kubectl(apiserver, home, "top", *args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_kubectl_top_from_the_kubelet_api_of_a_running_fleet(
    make_fleet: Callable[..., FleetHarness],
    start_producer: StartProducer,
    apiserver: FakeKubeApiServer,
    tmp_path: Path,
) -> None:
    fleet = make_fleet(kubelet_stats={"cache_seconds": 1})  # the setting reaches the producer
    fleet.start_worker(concurrency=2)
    for sub in ("stats", "metrics"):
        apiserver.auth.rules.append(AccessRule(allow=True, user=KUBELET_CLIENT, subresource=sub))
    (tmp_path / "pki").mkdir()
    pki = Pki(FleetCA.create("test cluster CA"), tmp_path / "pki")
    serving = pki.ca.issue_agent_server_cert("kubelet", ips=["127.0.0.1"])
    port = free_port()
    producer = start_producer(
        fleet,
        NODE,
        "--kubelet-port",
        str(port),
        "--kubelet-address",
        "127.0.0.1",
        "--kubelet-cert",
        pki.write("kubelet.crt", serving.cert_pem),
        "--kubelet-key",
        pki.write("kubelet.key", serving.key_pem),
        "--kubelet-client-ca",
        pki.write("ca.crt", pki.ca.cert_pem),
    )
    uids = {apiserver.create("pods", p)["metadata"]["uid"] for p in _pods()}
    api = Api(port, pki.client_context())
    wait_until(lambda: port_open(port) or not producer.alive(), 30, "the kubelet API to listen")
    fleet.wait_phase(uids, {Phase.RUNNING}, timeout=60)

    def scrape() -> Scrape:
        status, body = api.get("/metrics/resource")
        assert status == 200, body
        return from_resource_metrics(body.decode())

    first = scrape()
    assert set(first) == {("default", "web-0"), ("default", "worker")}
    assert set(first["default", "worker"]) == {"main", "sidecar"}
    # A scrape 2 s later (the 1 s cache expired): newer timestamps on every container.
    stamp = first["default", "web-0"]["main"].timestamp
    latest: list[Scrape] = []

    def newer() -> bool:
        latest.append(scrape())
        return latest[-1]["default", "web-0"]["main"].timestamp > stamp + 2

    wait_until(newer, 15, "a fresh scrape", interval=0.5)
    second = latest[-1]
    top = [
        "NAME     CPU(cores)   MEMORY(bytes)",
        "web-0    3m           12Mi",
        "worker   500m         64Mi",
    ]
    assert top_pods(pod_usage(first, second)).splitlines() == top
    # What metrics-server would serve from those scrapes, read by the real kubectl.
    apiserver.metrics.pods = container_usage(first, second)
    home = tmp_path / "home"
    home.mkdir()
    # kubectl rounds nanocores up to millicores, and a rate between two millisecond timestamps is off
    # by a hair, so a CPU figure may read one millicore above the exact rate.
    pods = [line.split() for line in _top(apiserver, home, "pod").splitlines()]
    assert pods[0] == ["NAME", "CPU(cores)", "MEMORY(bytes)"]
    assert [(name, memory) for name, _, memory in pods[1:]] == [("web-0", "12Mi"), ("worker", "64Mi")]
    assert [
        int(cpu.removesuffix("m")) - exact for (_, cpu, _), exact in zip(pods[1:], (3, 500), strict=True)
    ] in (
        [0, 0],
        [0, 1],
        [1, 0],
        [1, 1],
    )
    lines = _top(apiserver, home, "pod", "worker", "--containers").splitlines()
    rows = [line.split() for line in lines[1:]]
    assert [(r[0], r[1], r[3]) for r in rows] == [("worker", "main", "32Mi"), ("worker", "sidecar", "32Mi")]
    assert all(r[2] in ("250m", "251m") for r in rows), rows

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
