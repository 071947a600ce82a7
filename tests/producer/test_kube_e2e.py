"""End to end in Kubernetes mode: API double, producer, real Redis, Celery workers, moto, agent simulator.

Each test runs the real ``vkec2 producer`` as a subprocess against the Kubernetes API double over
HTTP and a real worker fleet, and checks what a user would see with kubectl: pod phase,
conditions, IP, annotations and Events; and what EC2 holds: exactly one instance per live pod.
"""

from __future__ import annotations

import datetime
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.k8s.apiserver import FakeKubeApiServer
from tests.producer.conftest import NODE_IP, StartProducer, pod_manifest
from tests.support.fleet import FleetHarness
from tests.support.services import wait_until

Make = Callable[..., FleetHarness]
NODE = "vk-e2e-0"


def _pod(api: FakeKubeApiServer, name: str, namespace: str = "default") -> dict[str, Any] | None:
    return api.get("pods", name, namespace)


def _condition(pod: dict[str, Any], kind: str) -> str | None:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return str(cond.get("status"))
    return None


def _events(api: FakeKubeApiServer, uid: str) -> list[dict[str, Any]]:
    return [e for e in api.list_objects("events") if e["involvedObject"].get("uid") == uid]


def _wait_running(api: FakeKubeApiServer, names: list[str], timeout: float = 90) -> None:
    def running() -> bool:
        for name in names:
            pod = _pod(api, name)
            if (
                pod is None
                or (pod.get("status") or {}).get("phase") != "Running"
                or _condition(pod, "Ready") != "True"
            ):
                return False
        return True

    api.wait_for(lambda _: running(), timeout, f"pods {names} to be Running and Ready")


def test_pod_runs_with_conditions_ip_annotation_and_events_then_deletion_removes_it(
    make_fleet: Make, apiserver: FakeKubeApiServer, start_producer: StartProducer, core_api: Any
) -> None:
    fleet = make_fleet()
    fleet.start_worker(concurrency=4)
    start_producer(fleet, NODE)

    node = apiserver.get("nodes", NODE)
    assert node is not None
    labels = node["metadata"]["labels"]
    assert labels["type"] == "virtual-kubelet" and labels["kubernetes.io/role"] == "agent"
    assert labels["kubernetes.io/os"] == "linux"
    assert "node.kubernetes.io/exclude-from-external-load-balancers" in labels
    taint = {"key": "virtual-kubelet.io/provider", "value": "vkec2", "effect": "NoSchedule"}
    assert taint in node["spec"]["taints"]
    assert node["spec"]["providerID"] == f"vkec2://{fleet.cluster}/{NODE}"

    created = apiserver.create("pods", pod_manifest("web", NODE))
    uid = created["metadata"]["uid"]
    _wait_running(apiserver, ["web"])

    pod = _pod(apiserver, "web")
    assert pod is not None
    record = fleet.record(uid)
    assert record.instance_id and record.private_ip
    status = pod["status"]
    assert status["podIP"] == record.private_ip and status["hostIP"] == record.private_ip
    assert pod["metadata"]["annotations"]["compute.amazonaws.com/instance-id"] == record.instance_id
    assert _condition(pod, "vkec2.io/InstanceReady") == "True"
    assert _condition(pod, "vkec2.io/AgentConnected") == "True"
    assert _condition(pod, "ContainersReady") == "True"
    reasons = [e["reason"] for e in sorted(_events(apiserver, uid), key=lambda e: e["metadata"]["name"])]
    assert "Launched" in reasons and "AgentConnected" in reasons, reasons
    assert all(e["type"] == "Normal" for e in _events(apiserver, uid))
    assert fleet.instances_by_uid() == {uid: [record.instance_id]}

    # The node reports itself Ready with its IP; allocatable is capacity (the scheduler counts the pod).
    def node_ready() -> bool:
        n = apiserver.get("nodes", NODE) or {}
        st = n.get("status") or {}
        return _condition(n, "Ready") == "True" and st.get("allocatable", {}).get("pods") == "100"

    apiserver.wait_for(lambda _: node_ready(), 20, "node Ready with allocatable = capacity")
    st = (apiserver.get("nodes", NODE) or {})["status"]
    assert {"type": "InternalIP", "address": NODE_IP} in st["addresses"]
    assert st["daemonEndpoints"]["kubeletEndpoint"]["Port"] == 10250

    # kubectl annotate: a change that matters reaches the instance (tags) through an update task.
    patch = {"metadata": {"annotations": {"compute.amazonaws.com/tags": '{"team": "blue"}'}}}
    core_api.patch_namespaced_pod("web", "default", patch, _content_type="application/merge-patch+json")

    def tagged() -> bool:
        return any({"Key": "team", "Value": "blue"} in i.get("Tags", []) for i in fleet.instances())

    wait_until(tagged, 30, "the instance to get the new tag")
    apiserver.wait_for(lambda a: "Updated" in [e["reason"] for e in _events(a, uid)], 10, "the Updated event")

    # kubectl delete pod web: graceful deletion; the producer finishes it once the fleet is done.
    core_api.delete_namespaced_pod("web", "default")
    apiserver.wait_for(lambda a: a.get("pods", "web", "default") is None, 60, "the pod object to go")
    assert fleet.instances_by_uid() == {}
    wait_until(lambda: fleet.store.get(uid) is None, 20, "the record to be forgotten")
    reasons = [e["reason"] for e in _events(apiserver, uid)]
    assert "Killing" in reasons and "Terminated" in reasons, reasons


def test_producer_killed_mid_run_and_restarted_recreates_no_instance_and_loses_no_pod(
    make_fleet: Make, apiserver: FakeKubeApiServer, start_producer: StartProducer, core_api: Any
) -> None:
    fleet = make_fleet()
    fleet.start_worker(concurrency=4)
    first = start_producer(fleet, NODE)
    uids = {
        f"p{i}": apiserver.create("pods", pod_manifest(f"p{i}", NODE))["metadata"]["uid"] for i in range(4)
    }

    def some_launched() -> bool:
        return any(r.instance_id for r in fleet.store.records(NODE))

    wait_until(some_launched, 60, "instances to be launched")
    first.kill(signal.SIGKILL)
    assert first.proc is not None
    first.proc.wait(10)
    # While no producer runs: one more pod is bound to the node and one is deleted.
    uids["late"] = apiserver.create("pods", pod_manifest("late", NODE))["metadata"]["uid"]
    core_api.delete_namespaced_pod("p0", "default")

    start_producer(fleet, NODE)
    _wait_running(apiserver, ["p1", "p2", "p3", "late"])
    apiserver.wait_for(lambda a: a.get("pods", "p0", "default") is None, 60, "p0 to be removed")

    live = fleet.instances_by_uid()
    assert sorted(live) == sorted(uids[n] for n in ("p1", "p2", "p3", "late"))
    every_state = ("pending", "running", "shutting-down", "terminated", "stopping", "stopped")
    ever = fleet.instances_by_uid(every_state)
    assert all(len(ids) == 1 for ids in ever.values()), ever
    for name in ("p1", "p2", "p3", "late"):
        pod = _pod(apiserver, name)
        assert pod is not None
        annotation = pod["metadata"]["annotations"]["compute.amazonaws.com/instance-id"]
        assert live[uids[name]] == [annotation]
    wait_until(lambda: fleet.store.get(uids["p0"]) is None, 30, "p0's record to be forgotten")


def test_watch_expiry_410_is_handled_by_relisting(
    make_fleet: Make, apiserver: FakeKubeApiServer, start_producer: StartProducer
) -> None:
    fleet = make_fleet()  # no workers needed: the records and tasks are what the watch produces
    proc = start_producer(fleet, NODE)
    before = apiserver.create("pods", pod_manifest("before", NODE))["metadata"]["uid"]
    wait_until(lambda: fleet.store.get(before) is not None, 20, "the first pod's record")
    lists = apiserver.request_count("list", "pods")
    # Move the resourceVersion on without the producer seeing it, then forget the history.
    apiserver.create("pods", pod_manifest("elsewhere", "another-node"))
    apiserver.expire_history()
    apiserver.close_watches()
    after = apiserver.create("pods", pod_manifest("after", NODE))["metadata"]["uid"]

    wait_until(lambda: fleet.store.get(after) is not None, 20, "the pod created after the expiry")
    assert apiserver.request_count("list", "pods") > lists
    assert "expired (410): relisting" in proc.output()
    assert fleet.store.uids(NODE) == {before, after}
    apiserver.wait_for(lambda a: a.open_watches("pods") >= 1, 10, "the producer to watch again")


def test_lease_renewals_follow_the_schedule_and_stop_when_no_worker_is_alive(
    make_fleet: Make, apiserver: FakeKubeApiServer, start_producer: StartProducer
) -> None:
    fleet = make_fleet()
    worker = fleet.start_worker(concurrency=1)
    start_producer(fleet, NODE)

    apiserver.wait_for(lambda a: a.get("leases", NODE, "kube-node-lease") is not None, 10, "the lease")
    lease = apiserver.get("leases", NODE, "kube-node-lease")
    node = apiserver.get("nodes", NODE)
    assert lease is not None and node is not None
    assert lease["spec"]["holderIdentity"] == NODE and lease["spec"]["leaseDurationSeconds"] == 5
    assert lease["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Node", "name": NODE, "uid": node["metadata"]["uid"]}
    ]

    # Renewals every 0.5 s (+-10 %): six of them take about three seconds.
    start = apiserver.request_count("update", "leases")
    t0 = time.monotonic()
    apiserver.wait_for(lambda a: a.request_count("update", "leases") >= start + 6, 10, "six renewals")
    elapsed = time.monotonic() - t0
    assert 2.0 <= elapsed <= 5.0, elapsed
    renewals = [e.obj["spec"]["renewTime"] for e in apiserver.history() if e.resource == "leases"]
    gaps = [b - a for a, b in zip(_times(renewals), _times(renewals)[1:], strict=False)][1:]
    assert gaps and all(0.3 <= g <= 1.5 for g in gaps), gaps
    apiserver.wait_for(lambda a: _condition(a.get("nodes", NODE) or {}, "Ready") == "True", 10, "node Ready")

    worker.stop()
    apiserver.wait_for(
        lambda a: _condition(a.get("nodes", NODE) or {}, "Ready") == "False",
        15,
        "node NotReady once no worker answers",
    )
    conditions = (apiserver.get("nodes", NODE) or {})["status"]["conditions"]
    ready = next(c for c in conditions if c["type"] == "Ready")
    assert ready["reason"] == "NoWorkers" and "worker" in ready["message"]
    stopped_at = apiserver.request_count("update", "leases")
    with pytest.raises(TimeoutError):  # four intervals without a renewal
        apiserver.wait_for(lambda a: a.request_count("update", "leases") > stopped_at, 2.0, "a renewal")

    fleet.start_worker(concurrency=1)
    apiserver.wait_for(lambda a: a.request_count("update", "leases") > stopped_at + 2, 30, "renewals again")
    apiserver.wait_for(
        lambda a: _condition(a.get("nodes", NODE) or {}, "Ready") == "True", 10, "node Ready again"
    )


def _times(stamps: list[str]) -> list[float]:
    return [datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() for s in stamps]


def test_malformed_pods_end_failed_with_an_event_naming_the_problem(
    make_fleet: Make, apiserver: FakeKubeApiServer, start_producer: StartProducer
) -> None:
    fleet = make_fleet()
    fleet.start_worker(concurrency=2)
    start_producer(fleet, NODE)
    bad_tags = apiserver.create(
        "pods", pod_manifest("bad-tags", NODE, annotations={"compute.amazonaws.com/tags": "not-json"})
    )["metadata"]["uid"]
    bad_pool = apiserver.create(
        "pods",
        pod_manifest("bad-pool", NODE, annotations={"compute.amazonaws.com/warm-pool": "no-such-pool"}),
    )
    bad_pool = bad_pool["metadata"]["uid"]

    def failed() -> bool:
        return all(
            (_pod(apiserver, n) or {}).get("status", {}).get("phase") == "Failed"
            for n in ("bad-tags", "bad-pool")
        )

    apiserver.wait_for(lambda _: failed(), 60, "both pods to fail")
    for uid, name, reason, words in (
        (bad_tags, "bad-tags", "InvalidAnnotation", "tags"),
        (bad_pool, "bad-pool", "UnknownWarmPool", "no-such-pool"),
    ):
        pod = _pod(apiserver, name)
        assert pod is not None
        assert pod["status"]["reason"] == reason and words in pod["status"]["message"]
        assert _condition(pod, "Ready") == "False"

        def warned(a: FakeKubeApiServer, u: str = uid) -> bool:
            return any(e["type"] == "Warning" for e in _events(a, u))

        apiserver.wait_for(warned, 10, f"the Warning event of {name}")
        warnings = [e for e in _events(apiserver, uid) if e["type"] == "Warning"]
        assert [e["reason"] for e in warnings] == [reason], warnings
        assert words in warnings[0]["message"]
    assert fleet.instances_by_uid() == {}


def test_two_producers_run_two_nodes_on_one_redis_and_one_worker_fleet(
    make_fleet: Make, apiserver: FakeKubeApiServer, start_producer: StartProducer, core_api: Any
) -> None:
    fleet = make_fleet()
    fleet.start_worker(concurrency=4)
    start_producer(fleet, "vk-a")
    start_producer(fleet, "vk-b")
    a = apiserver.create("pods", pod_manifest("on-a", "vk-a"))["metadata"]["uid"]
    b = apiserver.create("pods", pod_manifest("on-b", "vk-b"))["metadata"]["uid"]
    _wait_running(apiserver, ["on-a", "on-b"])
    assert fleet.store.uids("vk-a") == {a} and fleet.store.uids("vk-b") == {b}
    nodes = {}
    for inst in fleet.instances():
        tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
        nodes[tags["vkec2.io/pod-uid"]] = tags["vkec2.io/node"]
    assert nodes == {a: "vk-a", b: "vk-b"}
    assert {e["source"]["host"] for e in _events(apiserver, a)} == {"vk-a"}
    assert {e["source"]["host"] for e in _events(apiserver, b)} == {"vk-b"}
    for name in ("vk-a", "vk-b"):
        assert apiserver.get("leases", name, "kube-node-lease") is not None

    core_api.delete_namespaced_pod("on-a", "default")
    apiserver.wait_for(lambda s: s.get("pods", "on-a", "default") is None, 60, "on-a to be removed")
    assert sorted(fleet.instances_by_uid()) == [b]
    pod = _pod(apiserver, "on-b")
    assert pod is not None and pod["status"]["phase"] == "Running"


def test_grace_period_bounds_deletion_when_the_fleet_is_unreachable(
    make_fleet: Make, apiserver: FakeKubeApiServer, start_producer: StartProducer, core_api: Any
) -> None:
    fleet = make_fleet()
    worker = fleet.start_worker(concurrency=2)
    start_producer(fleet, NODE)
    uid = apiserver.create("pods", pod_manifest("slow", NODE, grace=2))["metadata"]["uid"]
    _wait_running(apiserver, ["slow"])
    worker.stop()

    t0 = time.monotonic()
    core_api.delete_namespaced_pod("slow", "default")
    apiserver.wait_for(lambda a: a.get("pods", "slow", "default") is None, 15, "the grace period to end it")
    # deletionTimestamp has whole seconds, so "now + 2 s" may be as little as 1 s away.
    assert time.monotonic() - t0 >= 0.9
    record = fleet.record(uid)
    assert record.deleted and fleet.instances_by_uid() != {}, "the fleet has not terminated it yet"

    fleet.start_worker(concurrency=2)  # the fleet comes back: it terminates the instance
    wait_until(lambda: fleet.instances_by_uid() == {}, 60, "the instance to be terminated")
    wait_until(lambda: fleet.store.get(uid) is None, 30, "the record to be forgotten")
