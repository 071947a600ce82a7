"""Probe results from the worker to Kubernetes: the sweep's write, the Redis outbox, the producer's sink.

The worker side is :func:`vkec2.fleet.appsync.write_status` (what the health sweep calls with the
agent's status) on the real Redis store; the producer side is :class:`KubeStatusSink` against the
API double. A failing readiness probe makes the pod NotReady with one ``Unhealthy`` Warning Event;
the recovery makes it Ready again without another Event. The last test takes the status from a
real agent whose workload hangs: its liveness restart and its ``Unhealthy``/``Killing`` Events
reach the pod.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from producer.deletion import Deleter
from producer.kube import Kube
from producer.outbox import GROUP
from producer.status import KubeStatusSink
from tests.agent.conftest import InProcessAgent, sh
from tests.agent.conftest import pod as agent_pod
from tests.k8s.apiserver import FakeKubeApiServer
from tests.producer.conftest import pod_manifest
from tests.support.services import wait_until
from vkec2.domain.agents import AppStatus
from vkec2.domain.models import Phase, StatusEvent, condition
from vkec2.fleet.appsync import write_status
from vkec2.store.redis_store import Store

NODE = "vk-probes"


@pytest.fixture
def kube() -> Iterator[tuple[FakeKubeApiServer, Kube]]:
    server = FakeKubeApiServer(bookmark_interval=600).start()
    cfg = k8s.Configuration()
    cfg.host = server.url
    api = Kube(k8s.ApiClient(cfg))
    yield server, api
    api.close()
    server.stop()


def _status(ready: bool, events: list[dict[str, Any]]) -> AppStatus:
    text = "True" if ready else "False"
    return AppStatus(
        phase="Running",
        conditions=[{"type": t, "status": text} for t in ("ContainersReady", "Ready")],
        container_statuses=[
            {"name": "main", "ready": ready, "restartCount": 0, "started": True, "state": {"running": {}}}
        ],
        reason="",
        message="",
        events=events,
    )


def _pod_condition(pod: dict[str, Any], kind: str) -> str:
    return next(str(c["status"]) for c in pod["status"]["conditions"] if c["type"] == kind)


class RunningPod:
    """A Running pod in the API double and in Redis; :meth:`sweep_writes` is one sweep's write of a status."""

    def __init__(self, store: Store, server: FakeKubeApiServer, api: Kube) -> None:
        self.store, self.server = store, server
        pod = server.create("pods", pod_manifest("web", NODE, gates=False))
        self.uid = pod["metadata"]["uid"]
        store.put_desired(pod, NODE)
        with store.locked(self.uid) as lock:
            lock.write(
                {
                    "phase": Phase.RUNNING.value,
                    "instance_id": "i-0abc",
                    "instance": {"InstanceId": "i-0abc", "PrivateIpAddress": "10.9.8.7"},
                    "conditions": [condition("vkec2.io/InstanceReady", True, "InstanceRunning")],
                }
            )
        store.outbox_ensure_group(NODE, GROUP)
        self.sink = KubeStatusSink(api, store, NODE, Deleter(api, store))

    def sweep_writes(self, status: AppStatus) -> dict[str, Any]:
        with self.store.locked(self.uid) as lock:
            rec = self.store.get(self.uid)
            assert rec is not None
            write_status(lock, rec, status)
        for entry_id, fields in self.store.outbox_read(NODE, GROUP, "t", ">", 10):
            self.sink(entry_id, StatusEvent.from_fields(fields))
        fresh = self.server.get("pods", "web", "default")
        assert fresh is not None
        return fresh


def test_readiness_reaches_the_pod_and_its_event_is_recorded_once(
    store: Store, kube: tuple[FakeKubeApiServer, Kube]
) -> None:
    server, api = kube
    sweep_writes = RunningPod(store, server, api).sweep_writes

    unhealthy = {
        "seq": 1,
        "type": "Warning",
        "reason": "Unhealthy",
        "message": "Readiness probe failed: HTTP probe failed with statuscode: 503",
        "container": "main",
        "count": 1,
    }
    fresh = sweep_writes(_status(False, [unhealthy]))
    assert _pod_condition(fresh, "Ready") == "False" and _pod_condition(fresh, "ContainersReady") == "False"
    assert fresh["status"]["containerStatuses"][0]["ready"] is False
    [event] = server.list_objects("events")
    assert (event["type"], event["reason"]) == ("Warning", "Unhealthy")
    assert event["message"].startswith("Readiness probe failed: HTTP probe failed with statuscode: 503")

    fresh = sweep_writes(_status(True, [unhealthy]))  # recovered; the same event is not sent again
    assert _pod_condition(fresh, "Ready") == "True" and fresh["status"]["containerStatuses"][0]["ready"]
    assert len(server.list_objects("events")) == 1


def test_a_real_agents_liveness_restart_and_events_reach_the_pod(
    store: Store, kube: tuple[FakeKubeApiServer, Kube], tmp_path: Path
) -> None:
    server, api = kube
    path = RunningPod(store, server, api)
    agent = InProcessAgent(tmp_path)
    try:
        live = tmp_path / "live"
        probe = {"exec": {"command": ["test", "-f", str(live)]}, "periodSeconds": 1, "failureThreshold": 1}
        container = sh("main", "exec sleep 600", livenessProbe=probe)
        agent.client.launch(agent.target, agent_pod(container))

        def restarted() -> AppStatus | None:
            status = agent.client.status(agent.target)
            counts = [c["restartCount"] for c in status.container_statuses]
            return status if counts and counts[0] >= 1 else None

        wait_until(lambda: restarted() is not None, 10, "the agent restarted the container")
        status = restarted()
        assert status is not None
        fresh = path.sweep_writes(status)
    finally:
        agent.stop()
    assert fresh["status"]["containerStatuses"][0]["restartCount"] >= 1
    events = {(e["reason"], e["type"]): e["message"] for e in server.list_objects("events")}
    assert events[("Unhealthy", "Warning")].startswith("Liveness probe failed")
    assert events[("Killing", "Normal")].startswith("Container main failed liveness probe, will be restarted")
