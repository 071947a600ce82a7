"""Probe results from the worker to Kubernetes: the sweep's write, the Redis outbox, the producer's sink.

The worker side is :func:`vkec2.fleet.appsync.write_status` (what the health sweep calls with the
agent's status) on the real Redis store; the producer side is :class:`KubeStatusSink` against the
API double. A failing readiness probe makes the pod NotReady with one ``Unhealthy`` Warning Event;
the recovery makes it Ready again without another Event.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s

from producer.deletion import Deleter
from producer.kube import Kube
from producer.outbox import GROUP
from producer.status import KubeStatusSink
from tests.k8s.apiserver import FakeKubeApiServer
from tests.producer.conftest import pod_manifest
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


def test_readiness_reaches_the_pod_and_its_event_is_recorded_once(
    store: Store, kube: tuple[FakeKubeApiServer, Kube]
) -> None:
    server, api = kube
    pod = server.create("pods", pod_manifest("web", NODE, gates=False))
    uid = pod["metadata"]["uid"]
    store.put_desired(pod, NODE)
    with store.locked(uid) as lock:
        lock.write(
            {
                "phase": Phase.RUNNING.value,
                "instance_id": "i-0abc",
                "instance": {"InstanceId": "i-0abc", "PrivateIpAddress": "10.9.8.7"},
                "conditions": [condition("vkec2.io/InstanceReady", True, "InstanceRunning")],
            }
        )
    store.outbox_ensure_group(NODE, GROUP)
    sink = KubeStatusSink(api, store, NODE, Deleter(api, store))

    def sweep_writes(status: AppStatus) -> dict[str, Any]:
        with store.locked(uid) as lock:
            rec = store.get(uid)
            assert rec is not None
            write_status(lock, rec, status)
        for entry_id, fields in store.outbox_read(NODE, GROUP, "t", ">", 10):
            sink(entry_id, StatusEvent.from_fields(fields))
        fresh = server.get("pods", "web", "default")
        assert fresh is not None
        return fresh

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
