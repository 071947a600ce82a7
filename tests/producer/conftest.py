"""Fixtures for producer tests: the Kubernetes API double, the fleet harness, producers as subprocesses.

A producer under test is the real ``vkec2 producer`` command, run as a child process (so it can be
SIGKILLed and restarted) with short timings from its flags, talking to the API double over HTTP
through the official client, to a private Redis, and through Celery to real workers started by
:class:`~tests.support.fleet.FleetHarness`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from tests.fleet.conftest import ec2_proxy, make_fleet
from tests.k8s.apiserver import FakeKubeApiServer
from tests.support.fleet import FleetHarness
from tests.support.services import ManagedProcess, start_agent_sim, wait_until

__all__ = ["apiserver", "ec2_proxy", "make_fleet"]

NODE_IP = "10.20.30.40"
FAST = [
    "--lease-interval",
    "0.5",
    "--lease-duration",
    "5",
    "--node-status-interval",
    "2",
    "--ping-timeout",
    "0.5",
    "--outbox-claim-idle",
    "1",
    "--outbox-stall",
    "20",
    "--watch-timeout",
    "20",
]

StartProducer = Callable[..., ManagedProcess]


@pytest.fixture
def process_sim(moto_url: str, tmp_path: Path) -> Iterator[str]:
    """An agent simulator of the test's own whose agents really run the pods (``--runtime process``)."""
    proc, endpoint = start_agent_sim(
        moto_url, extra_args=["--runtime", "process", "--log-dir", str(tmp_path / "container-logs")]
    )
    yield endpoint
    proc.stop()


@pytest.fixture
def apiserver() -> Iterator[FakeKubeApiServer]:
    server = FakeKubeApiServer(bookmark_interval=600).start()
    yield server
    server.stop()


@pytest.fixture
def core_api(apiserver: FakeKubeApiServer) -> Iterator[Any]:
    """The official client's CoreV1Api against the double (what a user's kubectl would do)."""
    cfg = k8s.Configuration()
    cfg.host = apiserver.url
    api_client = k8s.ApiClient(cfg)
    yield k8s.CoreV1Api(api_client)
    api_client.close()


@pytest.fixture
def start_producer(apiserver: FakeKubeApiServer) -> Iterator[StartProducer]:
    """Start ``vkec2 producer`` for a fleet; Kubernetes mode unless ``manifests`` is given."""
    started: list[ManagedProcess] = []

    def start(
        fleet: FleetHarness,
        node: str,
        *extra: str,
        manifests: Path | None = None,
        wait: bool = True,
        env: dict[str, str] | None = None,
    ) -> ManagedProcess:
        argv = fleet.producer_argv(node, *FAST, "--log-level", "DEBUG", *extra)
        if "--kubelet-port" not in extra:
            argv.append("--no-kubelet")  # never the standard port 10250; kubelet tests pick a free one
        if manifests is not None:
            argv += ["--manifests", str(manifests)]
        else:
            argv += ["--kube-host", apiserver.url, "--node-ip", NODE_IP]
        proc = ManagedProcess(f"producer-{node}", argv, env={**fleet.env(), **(env or {})}).start()
        started.append(proc)
        if wait and manifests is None:

            def registered() -> bool:
                if not proc.alive():
                    raise RuntimeError(f"producer exited:\n{proc.output()[-4000:]}")
                return apiserver.get("nodes", node) is not None and apiserver.open_watches("pods") > 0

            wait_until(registered, 30, f"producer of {node} to register and watch", interval=0.1)
        return proc

    yield start
    for proc in started:
        proc.stop()


def pod_manifest(
    name: str,
    node: str,
    *,
    annotations: dict[str, str] | None = None,
    gates: bool = True,
    grace: int = 30,
    namespace: str = "default",
) -> dict[str, Any]:
    """A pod bound to ``node`` (as the scheduler would leave it), optionally with vkec2 readiness gates."""
    spec: dict[str, Any] = {
        "nodeName": node,
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": grace,
        "containers": [{"name": "main", "image": "sim", "command": ["sleep", "3600"]}],
        "tolerations": [
            {
                "key": "virtual-kubelet.io/provider",
                "operator": "Equal",
                "value": "vkec2",
                "effect": "NoSchedule",
            }
        ],
    }
    if gates:
        spec["readinessGates"] = [
            {"conditionType": "vkec2.io/InstanceReady"},
            {"conditionType": "vkec2.io/AgentConnected"},
        ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "annotations": dict(annotations or {})},
        "spec": spec,
    }


def assert_node_removed(
    fleet: FleetHarness, apiserver: FakeKubeApiServer, node: str, uids: set[str], instances: set[str]
) -> None:
    """A drained node is gone everywhere: its Node, its pods, its records and Redis entries, and the
    instances of its pods (``uids``, ``instances``)."""
    assert apiserver.get("nodes", node) is None
    assert [p for p in apiserver.list_objects("pods") if p["spec"].get("nodeName") == node] == []
    assert fleet.store.uids(node) == set() and not uids & fleet.store.uids()
    assert node not in fleet.store.nodes() and node not in fleet.store.reconciled()
    live = fleet.instances_by_uid()
    assert not instances & {iid for ids in live.values() for iid in ids}
