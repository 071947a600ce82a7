"""apps/v1 StatefulSets of the Kubernetes API double, driven by the official client over loopback HTTP."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from tests.k8s.apiserver import FakeKubeApiServer
from tests.k8s.test_apiserver import error_of


@pytest.fixture
def server() -> Iterator[FakeKubeApiServer]:
    with FakeKubeApiServer() as srv:
        yield srv


@pytest.fixture
def api_client(server: FakeKubeApiServer) -> Iterator[Any]:
    with client.ApiClient(client.Configuration(host=server.url)) as api:
        yield api


def test_statefulsets_defaulted_read_and_scaled_through_apps_v1(
    server: FakeKubeApiServer, api_client: Any
) -> None:
    apps = client.AppsV1Api(api_client)
    names = {r.name for r in apps.get_api_resources().resources}
    assert names == {"statefulsets", "statefulsets/status"}
    labels = {"app": "vk"}
    sts = client.V1StatefulSet(
        metadata=client.V1ObjectMeta(name="vk", namespace="default"),
        spec=client.V1StatefulSetSpec(
            replicas=2,
            service_name="vk",
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[client.V1Container(name="p", image="busybox:1.36")]),
            ),
        ),
    )
    created = apps.create_namespaced_stateful_set("default", sts)
    assert created.spec.pod_management_policy == "OrderedReady" and created.status.replicas == 0
    assert created.metadata.generation == 1
    created.spec.replicas = 1
    scaled = apps.replace_namespaced_stateful_set("vk", "default", created)
    assert scaled.spec.replicas == 1 and scaled.metadata.generation == 2
    assert apps.read_namespaced_stateful_set("vk", "default").spec.replicas == 1  # parsed by the model
    with pytest.raises(client.ApiException) as missing:
        apps.read_namespaced_stateful_set("vk", "kube-system")
    assert error_of(missing)["reason"] == "NotFound"
    # The client's model refuses a spec without selector and template itself; the server does too.
    bad = {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "bad"}, "spec": {}}
    request = urllib.request.Request(
        f"{server.url}/apis/apps/v1/namespaces/default/statefulsets",
        data=json.dumps(bad).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as invalid:
        urllib.request.urlopen(request, timeout=10)
    assert invalid.value.code == 422 and b"spec.selector: Required value" in invalid.value.read()
