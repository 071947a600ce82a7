"""End to end in Kubernetes mode: the node's labels and taints, a DaemonSet pod refused, the NotReady
eviction warning — producer, workers and the API double, with the AWS-like defaults.

One DaemonSet pod carrying the default 300 s not-ready toleration is enough: it is refused before any
instance is launched (so the test stays fast) and still gets the eviction warning when it arrives.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.k8s.apiserver import FakeKubeApiServer
from tests.producer.conftest import StartProducer, pod_manifest
from tests.support.fleet import FleetHarness

Make = Callable[..., FleetHarness]
NODE = "vk-citizen-0"


def test_labels_taints_daemonset_refusal_and_eviction_warning(
    make_fleet: Make, apiserver: FakeKubeApiServer, start_producer: StartProducer
) -> None:
    fleet = make_fleet(
        ec2={"instance_type": "m6g.large"},
        kubernetes={
            "labels": {"team": "ci"},
            "taints": [{"key": "vkec2.io/dedicated", "value": "ci", "effect": "NoSchedule"}],
        },
    )
    fleet.start_worker(concurrency=2)
    start_producer(fleet, NODE)

    node = apiserver.get("nodes", NODE)
    assert node is not None
    labels = node["metadata"]["labels"]
    assert (
        labels["kubernetes.io/arch"] == "arm64" and labels["node.kubernetes.io/instance-type"] == "m6g.large"
    )
    assert labels["team"] == "ci"
    assert node["spec"]["taints"] == [{"key": "vkec2.io/dedicated", "value": "ci", "effect": "NoSchedule"}]

    manifest: dict[str, Any] = pod_manifest("exporter-x1", NODE, gates=False)
    manifest["metadata"]["ownerReferences"] = [
        {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "exporter", "uid": "ds-1", "controller": True}
    ]
    manifest["spec"]["tolerations"].append(
        {
            "key": "node.kubernetes.io/not-ready",
            "operator": "Exists",
            "effect": "NoExecute",
            "tolerationSeconds": 300,
        }
    )
    uid = apiserver.create("pods", manifest)["metadata"]["uid"]

    def refused(_: Any) -> bool:
        pod = apiserver.get("pods", "exporter-x1", "default") or {}
        return (pod.get("status") or {}).get("reason") == "DaemonSetPodRefused"

    apiserver.wait_for(refused, 30, "the DaemonSet pod to be refused")
    pod = apiserver.get("pods", "exporter-x1", "default") or {}
    assert pod["status"]["phase"] == "Failed" and "exporter" in pod["status"]["message"]

    def events() -> dict[str, str]:
        mine = [e for e in apiserver.list_objects("events") if e["involvedObject"].get("uid") == uid]
        return {str(e["reason"]): str(e["type"]) for e in mine}

    apiserver.wait_for(lambda _: "DaemonSetPodRefused" in events(), 15, "the refusal's event")
    assert events()["DaemonSetPodRefused"] == "Warning"
    assert events().get("EvictedIfNodeNotReady") == "Warning"
    assert fleet.instances_by_uid() == {}
