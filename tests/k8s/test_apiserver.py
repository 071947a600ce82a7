"""The Kubernetes API double driven by the official ``kubernetes`` client over loopback HTTP."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes import client, watch

from tests.k8s.apiserver import FakeKubeApiServer, strategic_merge_patch

NODE = "vk-node-0"


@pytest.fixture
def server() -> Iterator[FakeKubeApiServer]:
    with FakeKubeApiServer() as srv:
        yield srv


@pytest.fixture
def api_client(server: FakeKubeApiServer) -> Iterator[Any]:
    cfg = client.Configuration(host=server.url)
    with client.ApiClient(cfg) as api:
        yield api


@pytest.fixture
def core(api_client: Any) -> Any:
    return client.CoreV1Api(api_client)


def pod(name: str, node: str | None = NODE, labels: dict[str, str] | None = None) -> Any:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels=labels or {"app": "demo"}),
        spec=client.V1PodSpec(
            node_name=node, containers=[client.V1Container(name="main", image="busybox:1.36")]
        ),
    )


def take(stream: Iterator[dict[str, Any]], w: watch.Watch, count: int) -> list[dict[str, Any]]:
    """The first ``count`` events of a watch stream, then stop it (its timeoutSeconds bounds the wait)."""
    events = []
    for event in stream:
        events.append(event)
        if len(events) == count:
            w.stop()
    return events


def error_of(exc: pytest.ExceptionInfo[Any]) -> dict[str, Any]:
    body = json.loads(exc.value.body)
    assert body["kind"] == "Status" and body["code"] == exc.value.status
    return body  # type: ignore[no-any-return]


def test_discovery_and_version(api_client: Any) -> None:
    version = client.VersionApi(api_client).get_code()
    assert (version.major, version.minor) == ("1", "33")
    names = {r.name for r in client.CoreV1Api(api_client).get_api_resources().resources}
    assert {"pods", "pods/status", "nodes", "nodes/status", "namespaces", "events"} <= names
    lease_names = {r.name for r in client.CoordinationV1Api(api_client).get_api_resources().resources}
    assert lease_names == {"leases"}


def test_pod_create_get_list_patch_replace_delete(server: FakeKubeApiServer, core: Any) -> None:
    created = core.create_namespaced_pod("default", pod("a"))
    meta = created.metadata
    assert meta.uid and meta.generation == 1 and meta.creation_timestamp is not None
    assert created.status.phase == "Pending" and created.spec.restart_policy == "Always"
    assert int(meta.resource_version) == server.resource_version

    with pytest.raises(client.ApiException) as exc:
        core.create_namespaced_pod("default", pod("a"))
    assert exc.value.status == 409 and error_of(exc)["reason"] == "AlreadyExists"
    with pytest.raises(client.ApiException) as exc:
        core.read_namespaced_pod("missing", "default")
    assert exc.value.status == 404 and error_of(exc)["reason"] == "NotFound"
    with pytest.raises(client.ApiException) as exc:
        core.create_namespaced_pod("no-such-ns", pod("a"))
    assert exc.value.status == 404

    core.create_namespaced_pod("kube-system", pod("b", node="other"))
    assert [p.metadata.name for p in core.list_namespaced_pod("default").items] == ["a"]
    everything = core.list_pod_for_all_namespaces()
    assert sorted(p.metadata.name for p in everything.items) == ["a", "b"]
    assert int(everything.metadata.resource_version) == server.resource_version

    patched = core.patch_namespaced_pod("a", "default", {"metadata": {"labels": {"tier": "web"}}})
    assert patched.metadata.labels == {"app": "demo", "tier": "web"}
    assert int(patched.metadata.resource_version) > int(meta.resource_version)
    assert patched.metadata.uid == meta.uid and patched.metadata.generation == 1  # no spec change

    patched.spec.containers[0].image = "busybox:1.37"  # images are the mutable part of a pod spec
    replaced = core.replace_namespaced_pod("a", "default", patched)
    assert replaced.spec.containers[0].image == "busybox:1.37" and replaced.metadata.generation == 2

    replaced.spec.restart_policy = "Never"
    with pytest.raises(client.ApiException) as exc:
        core.replace_namespaced_pod("a", "default", replaced)
    assert exc.value.status == 422 and error_of(exc)["reason"] == "Invalid"

    core.delete_namespaced_pod("b", "kube-system")  # unbound to this node? it is bound: graceful
    assert server.get("pods", "b", "kube-system") is not None
    core.delete_namespaced_pod("b", "kube-system", grace_period_seconds=0)
    assert server.get("pods", "b", "kube-system") is None
    assert server.request_count("create", "pods") == 4  # including the two refused ones
    assert server.request_count("delete", "pods") == 2


def test_stale_resource_version_conflicts_and_noop_keeps_it(server: FakeKubeApiServer, core: Any) -> None:
    first = core.create_namespaced_pod("default", pod("a"))
    second = core.patch_namespaced_pod("a", "default", {"metadata": {"labels": {"x": "1"}}})
    first.metadata.labels = {"x": "2"}
    with pytest.raises(client.ApiException) as exc:
        core.replace_namespaced_pod("a", "default", first)
    assert exc.value.status == 409 and error_of(exc)["reason"] == "Conflict"
    with pytest.raises(client.ApiException) as exc:
        stale = {"metadata": {"resourceVersion": first.metadata.resource_version, "labels": {"x": "3"}}}
        core.patch_namespaced_pod("a", "default", stale)
    assert exc.value.status == 409
    same = core.patch_namespaced_pod("a", "default", {"metadata": {"labels": {"x": "1"}}})
    assert same.metadata.resource_version == second.metadata.resource_version
    assert server.get("pods", "a", "default")["metadata"]["labels"] == {"app": "demo", "x": "1"}  # type: ignore[index]


def test_status_subresource_rules_and_strategic_merge_by_type(server: FakeKubeApiServer, core: Any) -> None:
    core.create_namespaced_pod("default", pod("a"))
    now = datetime.now(UTC)
    body = {
        "status": {
            "phase": "Running",
            "podIP": "10.0.0.5",
            "conditions": [
                {"type": "vkec2.io/InstanceReady", "status": "True", "lastTransitionTime": now.isoformat()},
                {"type": "Ready", "status": "False"},
            ],
        },
        "spec": {"containers": [{"name": "main", "image": "ignored:1"}]},
    }
    written = core.patch_namespaced_pod_status("a", "default", body)
    assert written.status.phase == "Running" and written.spec.containers[0].image == "busybox:1.36"
    ready = {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    core.patch_namespaced_pod_status("a", "default", ready)
    stored = server.get("pods", "a", "default")
    assert stored is not None
    assert {c["type"]: c["status"] for c in stored["status"]["conditions"]} == {
        "vkec2.io/InstanceReady": "True",
        "Ready": "True",
    }

    # A main-resource write cannot change status; a status replace with a stale RV conflicts.
    current = core.read_namespaced_pod("a", "default")
    current.status.phase = "Failed"
    current.metadata.labels = {"app": "other"}
    after = core.replace_namespaced_pod("a", "default", current)
    assert after.status.phase == "Running" and after.metadata.labels == {"app": "other"}
    with pytest.raises(client.ApiException) as exc:
        core.replace_namespaced_pod_status("a", "default", current)
    assert exc.value.status == 409
    assert server.request_count("patch", "pods/status") == 2
    assert server.request_count("update", "pods/status") == 1

    node = client.V1Node(
        metadata=client.V1ObjectMeta(name=NODE, labels={"type": "virtual-kubelet"}),
        status=client.V1NodeStatus(
            conditions=[
                client.V1NodeCondition(type="Ready", status="True"),
                client.V1NodeCondition(type="NetworkUnavailable", status="False"),
            ],
            addresses=[client.V1NodeAddress(type="InternalIP", address="127.0.0.1")],
        ),
    )
    created = core.create_node(node)
    assert created.status.conditions[1].type == "NetworkUnavailable"  # nodes keep the status they come with
    core.patch_node_status(
        NODE,
        {
            "status": {
                "conditions": [{"type": "Ready", "status": "False", "reason": "NoWorkers"}],
                "addresses": [{"type": "Hostname", "address": NODE}],
            }
        },
    )
    stored_node = server.get("nodes", NODE)
    assert stored_node is not None
    assert [(c["type"], c["status"]) for c in stored_node["status"]["conditions"]] == [
        ("Ready", "False"),
        ("NetworkUnavailable", "False"),
    ]
    assert [a["type"] for a in stored_node["status"]["addresses"]] == ["InternalIP", "Hostname"]


def test_merge_patch_and_json_patch(server: FakeKubeApiServer, core: Any) -> None:
    core.create_namespaced_pod("default", pod("a", labels={"app": "demo", "drop": "me"}))
    merged = core.patch_namespaced_pod(
        "a",
        "default",
        {"metadata": {"labels": {"drop": None, "new": "1"}}},
        _content_type="application/merge-patch+json",
    )
    assert merged.metadata.labels == {"app": "demo", "new": "1"}
    annotations = {"compute.amazonaws.com/instance-id": "i-1"}
    ops = [
        {"op": "add", "path": "/metadata/annotations", "value": annotations},
        {"op": "test", "path": "/metadata/labels/new", "value": "1"},
        {"op": "remove", "path": "/metadata/labels/new"},
    ]
    patched = core.patch_namespaced_pod("a", "default", ops)
    assert patched.metadata.annotations == {"compute.amazonaws.com/instance-id": "i-1"}
    assert patched.metadata.labels == {"app": "demo"}
    with pytest.raises(client.ApiException) as exc:
        core.patch_namespaced_pod("a", "default", [{"op": "test", "path": "/metadata/name", "value": "b"}])
    assert exc.value.status == 422
    with pytest.raises(client.ApiException) as exc:
        core.patch_namespaced_pod("a", "default", {}, _content_type="application/apply-patch+yaml")
    assert exc.value.status == 415


def test_strategic_merge_directives() -> None:
    original = {
        "metadata": {"finalizers": ["a"], "labels": {"k": "v"}},
        "spec": {
            "containers": [
                {"name": "c", "image": "x", "env": [{"name": "A", "value": "1"}]},
                {"name": "d", "image": "y"},
            ]
        },
    }
    patch = {
        "metadata": {"finalizers": ["b"], "$deleteFromPrimitiveList/finalizers": ["a"]},
        "spec": {
            "$setElementOrder/containers": [{"name": "c"}],
            "containers": [
                {"name": "c", "env": [{"name": "B", "value": "2"}]},
                {"name": "d", "$patch": "delete"},
            ],
        },
    }
    result = strategic_merge_patch(original, patch)
    assert result["metadata"] == {"finalizers": ["b"], "labels": {"k": "v"}}
    assert result["spec"]["containers"] == [
        {"name": "c", "image": "x", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}
    ]
    replace = {"metadata": {"labels": {"$patch": "replace", "only": "this"}}}
    replaced = strategic_merge_patch(original, replace)
    assert replaced["metadata"]["labels"] == {"only": "this"}


def test_selectors(core: Any) -> None:
    core.create_namespaced_pod("default", pod("a", labels={"app": "x", "tier": "web"}))
    core.create_namespaced_pod("default", pod("b", node="elsewhere", labels={"app": "y"}))
    core.create_namespaced_pod("kube-system", pod("c", labels={"app": "x"}))

    def names(**kwargs: Any) -> list[str]:
        return sorted(p.metadata.name for p in core.list_pod_for_all_namespaces(**kwargs).items)

    assert names(field_selector=f"spec.nodeName={NODE}") == ["a", "c"]
    assert names(field_selector=f"spec.nodeName!={NODE}") == ["b"]
    assert names(field_selector="metadata.name=a,metadata.namespace=default") == ["a"]
    assert names(label_selector="app=x") == ["a", "c"]
    assert names(label_selector="app in (x, y),!tier") == ["b", "c"]
    assert names(label_selector="tier") == ["a"]
    assert names(label_selector="app!=x", field_selector="status.phase=Pending") == ["b"]
    with pytest.raises(client.ApiException) as exc:
        core.list_pod_for_all_namespaces(field_selector="spec.nope=1")
    assert exc.value.status == 400


def test_live_watch_with_field_selector(server: FakeKubeApiServer, core: Any) -> None:
    listed = core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={NODE}")
    events: queue.Queue[tuple[str, str, str]] = queue.Queue()
    w = watch.Watch()

    def consume() -> None:
        try:
            for event in w.stream(
                core.list_pod_for_all_namespaces,
                field_selector=f"spec.nodeName={NODE}",
                resource_version=listed.metadata.resource_version,
                timeout_seconds=30,
            ):
                obj = event["object"]
                events.put((event["type"], obj.metadata.name, obj.metadata.resource_version))
        except Exception as exc:  # surfaced by the assertions below
            events.put(("EXCEPTION", repr(exc), "0"))

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    server.wait_for(lambda s: s.open_watches("pods") == 1, 10, "the watch to open")
    core.create_namespaced_pod("default", pod("other-node", node="elsewhere"))
    core.create_namespaced_pod("default", pod("mine"))
    core.patch_namespaced_pod("mine", "default", {"metadata": {"labels": {"seen": "yes"}}})
    core.delete_namespaced_pod("mine", "default")  # graceful: MODIFIED with deletionTimestamp
    core.delete_namespaced_pod("mine", "default", grace_period_seconds=0)

    received = [events.get(timeout=10) for _ in range(4)]
    assert [(kind, name) for kind, name, _ in received] == [
        ("ADDED", "mine"),
        ("MODIFIED", "mine"),
        ("MODIFIED", "mine"),
        ("DELETED", "mine"),
    ]
    versions = [int(rv) for _, _, rv in received]
    assert versions == sorted(versions) and len(set(versions)) == 4
    server.close_watches()  # ends the stream cleanly; with timeout_seconds the client does not retry
    thread.join(10)
    assert not thread.is_alive() and events.empty()


def test_open_watches_counts_streams_until_the_client_leaves(server: FakeKubeApiServer, core: Any) -> None:
    resp = core.list_namespaced_pod("default", watch=True, timeout_seconds=30, _preload_content=False)
    server.wait_for(lambda s: s.open_watches("pods") == 1, 10, "the watch to open")
    resp.close()  # what Watch.stream does when its consumer stops
    resp.release_conn()
    server.wait_for(lambda s: s.open_watches("pods") == 0, 10, "the server to notice the client left")


def test_watch_translates_selector_enter_and_leave(server: FakeKubeApiServer, core: Any) -> None:
    core.create_namespaced_pod("default", pod("a", labels={"app": "demo"}))
    start = str(server.resource_version)
    core.patch_namespaced_pod("a", "default", {"metadata": {"labels": {"app": "gone"}}})
    core.patch_namespaced_pod("a", "default", {"metadata": {"labels": {"app": "demo"}}})
    w = watch.Watch()
    stream = w.stream(
        core.list_namespaced_pod,
        "default",
        label_selector="app=demo",
        resource_version=start,
        timeout_seconds=10,
    )
    seen = [(e["type"], e["object"].metadata.labels["app"]) for e in take(stream, w, 2)]
    assert seen == [("DELETED", "gone"), ("ADDED", "demo")]


def test_watch_without_resource_version_starts_with_current_state(core: Any) -> None:
    core.create_namespaced_pod("default", pod("a"))
    w = watch.Watch()
    stream = w.stream(core.list_namespaced_pod, "default", timeout_seconds=10)
    seen = [(e["type"], e["object"].metadata.name) for e in take(stream, w, 1)]
    assert seen == [("ADDED", "a")]


def test_expired_resource_version_is_410_gone(server: FakeKubeApiServer, core: Any) -> None:
    core.create_namespaced_pod("default", pod("a"))
    old = str(server.resource_version)
    core.patch_namespaced_pod("a", "default", {"metadata": {"labels": {"v": "2"}}})
    current = str(server.expire_history())
    with pytest.raises(client.ApiException) as exc:
        list(
            watch.Watch().stream(core.list_namespaced_pod, "default", resource_version=old, timeout_seconds=5)
        )
    assert exc.value.status == 410
    # Without timeout_seconds the client retries once itself, then raises too.
    w = watch.Watch()
    with pytest.raises(client.ApiException) as exc:
        for _ in w.stream(core.list_namespaced_pod, "default", resource_version=old):
            pass
    assert exc.value.status == 410
    # The producer's recovery: relist, then watch from the list's resourceVersion.
    relisted = core.list_namespaced_pod("default")
    assert relisted.metadata.resource_version == current
    assert (
        list(
            watch.Watch().stream(
                core.list_namespaced_pod, "default", resource_version=current, timeout_seconds=1
            )
        )
        == []
    )
    # The history is bounded: a small server forgets on its own.
    small = FakeKubeApiServer(history_size=3)
    for i in range(5):
        small.create(
            "pods", {"metadata": {"name": f"p{i}", "namespace": "default"}, "spec": {"containers": []}}
        )
    assert small.history()[0].rv == small.resource_version - 2


def test_paginated_list_and_expired_continue_token(server: FakeKubeApiServer, core: Any) -> None:
    for i in range(5):
        core.create_namespaced_pod("default", pod(f"p{i}"))
    first = core.list_namespaced_pod("default", limit=2)
    assert [p.metadata.name for p in first.items] == ["p0", "p1"] and first.metadata.remaining_item_count == 3
    core.delete_namespaced_pod("p3", "default", grace_period_seconds=0)  # after the snapshot: still listed
    second = core.list_namespaced_pod("default", limit=2, _continue=first.metadata._continue)
    assert [p.metadata.name for p in second.items] == ["p2", "p3"]
    assert second.metadata.resource_version == first.metadata.resource_version
    server.expire_history()
    with pytest.raises(client.ApiException) as exc:
        core.list_namespaced_pod("default", limit=2, _continue=second.metadata._continue)
    assert exc.value.status == 410 and error_of(exc)["reason"] == "Expired"
    with pytest.raises(client.ApiException) as exc:
        core.list_namespaced_pod("default", resource_version="1", resource_version_match="Exact")
    assert exc.value.status == 410


def test_graceful_deletion_and_uid_precondition(server: FakeKubeApiServer, core: Any) -> None:
    bound = core.create_namespaced_pod("default", pod("bound"))
    core.create_namespaced_pod("default", pod("unbound", node=None))
    start = str(server.resource_version)

    deleted = core.delete_namespaced_pod("unbound", "default")
    assert deleted.metadata.name == "unbound" and server.get("pods", "unbound", "default") is None

    terminating = core.delete_namespaced_pod("bound", "default", grace_period_seconds=45)
    assert terminating.metadata.deletion_timestamp is not None
    stored = server.get("pods", "bound", "default")
    assert stored is not None and stored["metadata"]["deletionGracePeriodSeconds"] == 45
    again = core.delete_namespaced_pod("bound", "default")  # longer grace: nothing changes
    assert again.metadata.resource_version == terminating.metadata.resource_version

    wrong = client.V1DeleteOptions(grace_period_seconds=0, preconditions=client.V1Preconditions(uid="not-it"))
    with pytest.raises(client.ApiException) as exc:
        core.delete_namespaced_pod("bound", "default", body=wrong)
    assert exc.value.status == 409 and "Precondition failed" in error_of(exc)["message"]
    right = client.V1DeleteOptions(
        grace_period_seconds=0, preconditions=client.V1Preconditions(uid=bound.metadata.uid)
    )
    core.delete_namespaced_pod("bound", "default", body=right)
    assert server.get("pods", "bound", "default") is None

    w = watch.Watch()
    stream = w.stream(core.list_namespaced_pod, "default", resource_version=start, timeout_seconds=10)
    seen = [
        (e["type"], e["object"].metadata.name, e["object"].metadata.deletion_timestamp is not None)
        for e in take(stream, w, 3)
    ]
    assert seen == [("DELETED", "unbound", False), ("MODIFIED", "bound", True), ("DELETED", "bound", True)]


def test_leases_create_and_renew(server: FakeKubeApiServer, api_client: Any) -> None:
    coord = client.CoordinationV1Api(api_client)
    lease = client.V1Lease(
        metadata=client.V1ObjectMeta(name=NODE, namespace="kube-node-lease"),
        spec=client.V1LeaseSpec(
            holder_identity=NODE, lease_duration_seconds=40, renew_time=datetime.now(UTC)
        ),
    )
    current = coord.create_namespaced_lease("kube-node-lease", lease)
    for _ in range(3):
        current.spec.renew_time = datetime.now(UTC)
        current = coord.replace_namespaced_lease(NODE, "kube-node-lease", current)
    assert server.request_count("create", "leases") == 1
    assert server.request_count("update", "leases") == 3
    stored = server.get("leases", NODE, "kube-node-lease")
    assert stored is not None and stored["spec"]["leaseDurationSeconds"] == 40
    assert stored["metadata"]["resourceVersion"] == current.metadata.resource_version


def test_events_create_and_list(api_client: Any, core: Any) -> None:
    target = core.create_namespaced_pod("default", pod("a"))
    event = client.CoreV1Event(
        metadata=client.V1ObjectMeta(generate_name="a."),
        involved_object=client.V1ObjectReference(
            kind="Pod", namespace="default", name="a", uid=target.metadata.uid
        ),
        reason="InstanceLaunched",
        message="launched i-123",
        type="Normal",
        source=client.V1EventSource(component="vkec2"),
    )
    created = core.create_namespaced_event("default", event)
    assert created.metadata.name.startswith("a.") and len(created.metadata.name) == 7
    found = core.list_namespaced_event(
        "default", field_selector="involvedObject.name=a,reason=InstanceLaunched"
    )
    assert [e.message for e in found.items] == ["launched i-123"]


def test_injected_errors_fail_then_pass(server: FakeKubeApiServer, core: Any) -> None:
    core.create_namespaced_pod("default", pod("a"))
    server.inject_error("patch", "pods/status", 500, times=1)
    with pytest.raises(client.ApiException) as exc:
        core.patch_namespaced_pod_status("a", "default", {"status": {"phase": "Running"}})
    assert exc.value.status == 500
    retried = core.patch_namespaced_pod_status("a", "default", {"status": {"phase": "Running"}})
    assert retried.status.phase == "Running"
