"""The node as a Kubernetes citizen: labels, taints and arch from the settings, adoption, config
errors, allocatable, NotReady eviction, the image table and what ``vkec2 pods`` shows for health."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from producer.node import NodeConfig, adopt, allocatable, labels, node_object, status_body, taints
from vkec2.config import InvalidConfig, Settings, load_config
from vkec2.config.citizen import ImageMapping, arch_of
from vkec2.contract import NODE_MANAGED_ANNOTATION
from vkec2.domain.citizen import eviction_after, node_arch, node_instance_type
from vkec2.domain.health import HealthState, health_label
from vkec2.domain.images import image_ami, lookup
from vkec2.domain.podspec import launch_params
from vkec2.errors import InvalidPodSpec

TLS = {"agent": {"tls": {"ca_cert_file": "/etc/vkec2/ca/ca.crt"}}}


def settings(**raw: Any) -> Settings:
    return Settings.model_validate({**TLS, **raw})


@pytest.mark.parametrize(
    ("kind", "arch"),
    [
        ("m5.large", "amd64"),
        ("g5.xlarge", "amd64"),
        ("g5g.xlarge", "arm64"),
        ("m7g.large", "arm64"),
        ("c6gn.16xlarge", "arm64"),
        ("im4gn.large", "arm64"),
        ("a1.large", "arm64"),
        ("mac1.metal", "amd64"),
        ("mac2.metal", "arm64"),
        ("mac2-m2pro.metal", "arm64"),
        ("c7i.large", "amd64"),
        ("g4ad.xlarge", "amd64"),
    ],
)
def test_the_architecture_of_an_instance_type(kind: str, arch: str) -> None:
    assert arch_of(kind) == arch


def test_labels_taints_and_arch_come_from_the_settings() -> None:
    s = settings(
        ec2={"instance_type": "m7g.large"},
        kubernetes={
            "labels": {"team": "ci", "example.com/tier": "build"},
            "taints": [{"key": "vkec2.io/dedicated", "value": "ci", "effect": "NoExecute"}],
        },
    )
    assert (node_arch(s), node_instance_type(s)) == ("arm64", "m7g.large")
    cfg = NodeConfig.of(s, name="vk-0")
    node = node_object(cfg)
    got = node["metadata"]["labels"]
    assert got["kubernetes.io/arch"] == "arm64" and got["node.kubernetes.io/instance-type"] == "m7g.large"
    assert got["team"] == "ci" and got["example.com/tier"] == "build" and got["type"] == "virtual-kubelet"
    assert node["spec"]["taints"] == [{"key": "vkec2.io/dedicated", "value": "ci", "effect": "NoExecute"}]
    assert status_body(cfg, *_health(), {}, {})["nodeInfo"]["architecture"] == "arm64"
    # Several launch types: no instance-type label; the stated arch wins over the derived one.
    several = settings(
        ec2={"instance_type": "m5.large", "instance_types": ["m6g.large"]}, kubernetes={"arch": "arm64"}
    )
    assert node_instance_type(several) == "" and "node.kubernetes.io/instance-type" not in labels(
        NodeConfig.of(several)
    )
    assert node_arch(several) == "arm64"
    assert NodeConfig.of(settings()).taints == (("virtual-kubelet.io/provider", "vkec2", "NoSchedule"),)


def _health() -> tuple[Any]:
    from producer.node import Health

    return (Health(True, "KubeletReady", ""),)


def test_adoption_replaces_only_what_vkec2_set_and_keeps_other_controllers() -> None:
    before = NodeConfig(name="vk-0", cluster="c", instance_type="m5.large", extra_labels=(("team", "a"),))
    node = node_object(before)
    node["metadata"]["labels"]["other.io/zone-owner"] = "x"
    node["metadata"]["annotations"]["kept"] = "yes"
    node["spec"]["taints"].append({"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"})
    node["metadata"]["uid"] = "u"
    after = NodeConfig(
        name="vk-0", cluster="c", arch="arm64", taints=(("vkec2.io/dedicated", "", "NoSchedule"),)
    )
    adopted = adopt(node, after)
    got = adopted["metadata"]["labels"]
    assert "team" not in got and "node.kubernetes.io/instance-type" not in got  # vkec2's, no longer set
    assert got["other.io/zone-owner"] == "x" and got["kubernetes.io/arch"] == "arm64"
    assert adopted["metadata"]["annotations"]["kept"] == "yes"
    assert adopted["spec"]["taints"] == [
        {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"},
        {"key": "vkec2.io/dedicated", "effect": "NoSchedule"},
    ]
    managed = json.loads(adopted["metadata"]["annotations"][NODE_MANAGED_ANNOTATION])
    assert managed["taints"] == [["vkec2.io/dedicated", "NoSchedule"]]
    # A node vkec2 registered before the annotation existed: only the provider taint was vkec2's.
    legacy = {
        "metadata": {"name": "vk-0", "labels": {"team": "a"}},
        "spec": {"taints": [dict(t) for t in taints(before)]},
    }
    again = adopt(legacy, after)
    assert again["metadata"]["labels"]["team"] == "a"
    assert again["spec"]["taints"] == [{"key": "vkec2.io/dedicated", "effect": "NoSchedule"}]


@pytest.mark.parametrize(
    ("kubernetes", "named"),
    [
        ({"labels": {"bad key!": "x"}}, "kubernetes.labels"),
        ({"labels": {"team": "-bad-"}}, "is not a label value"),
        ({"labels": {"kubernetes.io/arch": "arm64"}}, "is set by vkec2 itself"),
        ({"taints": [{"key": "a", "effect": "NoRun"}]}, "'NoRun' is not a taint effect"),
        ({"taints": [{"key": "a/b/c"}]}, "invalid prefix"),
        ({"arch": "ppc64le"}, "kubernetes.arch"),
        ({"daemonset_pods": "sometimes"}, "kubernetes.daemonset_pods"),
        ({"images": [{"name": "a", "prefix": "b", "ami": "ami-01"}]}, "exactly one of name"),
        ({"images": [{"name": "a", "ami": "nope"}]}, "not an AMI ID"),
    ],
)
def test_config_errors_name_the_problem(tmp_path: Path, kubernetes: dict[str, Any], named: str) -> None:
    path = tmp_path / "vkec2.json"
    path.write_text(json.dumps({**TLS, "kubernetes": kubernetes}))
    with pytest.raises(InvalidConfig) as info:
        load_config(path, env={})
    assert named in "\n".join(info.value.errors)


def test_a_node_of_100_pods_accepts_100_pods() -> None:
    # The scheduler's pod-count fit (NodeResourcesFit): a pod fits while the pods bound to the node
    # plus it stay within allocatable pods. It subtracts the bound pods itself, so the producer
    # writes allocatable = capacity whatever runs; before, 50 running pods left room for 50 more.
    cap = {"cpu": "96", "memory": "384Gi", "pods": "100"}
    body = status_body(NodeConfig(name="vk-0", cluster="c"), *_health(), cap, allocatable(cap))
    assert body["allocatable"] == body["capacity"] == cap

    def fits(bound: int) -> bool:
        return bound + 1 <= int(body["allocatable"]["pods"])

    assert all(fits(bound) for bound in range(100)) and not fits(100)  # the 100th fits, the 101st not


def test_eviction_after_is_the_smallest_finite_not_ready_toleration() -> None:
    def pod(*tolerations: dict[str, Any]) -> dict[str, Any]:
        return {"spec": {"tolerations": list(tolerations)}}

    not_ready = {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"}
    unreachable = {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}
    assert (
        eviction_after(pod({**not_ready, "tolerationSeconds": 300}, {**unreachable, "tolerationSeconds": 60}))
        == 60
    )
    assert eviction_after(pod(not_ready, unreachable)) is None  # tolerated forever
    assert eviction_after(pod({"key": "other", "effect": "NoExecute", "tolerationSeconds": 5})) is None
    assert eviction_after(pod({"operator": "Exists", "tolerationSeconds": 10})) == 10
    assert eviction_after({"spec": {}}) is None


def test_the_image_table_exact_beats_prefix_and_the_longest_prefix_wins() -> None:
    table = [
        ImageMapping(prefix="ubuntu", ami="ami-01"),
        ImageMapping(prefix="ubuntu-22.04", ami="ami-02"),
        ImageMapping(name="ubuntu-22.04-special", ami="ami-03"),
    ]
    assert lookup(table, "ubuntu-20.04") == "ami-01"
    assert lookup(table, "ubuntu-22.04-cuda") == "ami-02"
    assert lookup(table, "ubuntu-22.04-special:1.2") == "ami-03"  # exact, the tag aside
    assert lookup(table, "alpine") is None
    two = {"spec": {"containers": [{"image": "ubuntu-20.04"}, {"image": "ubuntu-22.04-x"}]}}
    with pytest.raises(InvalidPodSpec) as info:
        image_ami(table, two, refuse_unmapped=False)
    assert info.value.reason == "ConflictingImages"
    assert image_ami([], two, refuse_unmapped=True).ami is None  # no table: images are not looked up


def test_a_pod_whose_image_maps_elsewhere_does_not_take_the_warm_pools_instance() -> None:
    s = settings(
        ec2={"image_id": "ami-0d"},
        warm_pools=[{"name": "warm", "desired_count": 1}],
        kubernetes={"images": [{"prefix": "macos", "ami": "ami-0m"}, {"prefix": "linux", "ami": "ami-0d"}]},
    )
    base = {"metadata": {"uid": "u", "namespace": "default"}}
    mac = launch_params(s, {**base, "spec": {"containers": [{"image": "macos-14"}]}})
    assert (mac.image_id, mac.warm_pool) == ("ami-0m", None)
    same = launch_params(s, {**base, "spec": {"containers": [{"image": "linux-base"}]}})
    assert (same.image_id, same.warm_pool) == ("ami-0d", "warm")
    named = {
        **base,
        "metadata": {**base["metadata"], "annotations": {"compute.amazonaws.com/warm-pool": "warm"}},
    }
    with pytest.raises(InvalidPodSpec):
        launch_params(s, {**named, "spec": {"containers": [{"image": "macos-14"}]}})


def test_health_label_shows_the_sweeps_view() -> None:
    assert health_label({}, running=False) == "-"
    assert health_label({}, running=True) == "Checking"
    ok = HealthState(last_ok=True, checks=2, last_result="ok")
    assert health_label(ok.to_dict(), running=True) == "Healthy"
    sick = HealthState(failures=3, last_ok=False, unhealthy=True, checks=3, last_result="failed")
    assert health_label(sick.to_dict(), running=True) == "Unhealthy"
    failing = HealthState(failures=1, last_ok=False, checks=2, last_result="failed")  # below the threshold
    assert health_label(failing.to_dict(), running=True) == "Failing"
    unknown = HealthState(unknowns=1, checks=1, last_result="unknown")
    assert health_label(unknown.to_dict(), running=True) == "Unknown"
    flapping = HealthState(flapping=True, unhealthy=True, checks=9, last_result="ok")
    assert health_label(flapping.to_dict(), running=True) == "Flapping"


def test_an_allowlisted_instance_type_means_no_single_instance_type_label() -> None:
    assert node_instance_type(settings(allowlists={"default": {"instance_types": ["g5.xlarge"]}})) == ""
    assert node_instance_type(settings(allowlists={"namespaces": {"ci": {"instance_types": ["*"]}}})) == ""
    assert node_instance_type(settings()) == "m5.large"


def test_the_eviction_notice_warns_once_per_pod_with_a_finite_toleration() -> None:
    from producer.kube import KubeError
    from producer.notices import EvictionNotice

    class FakeKube:
        def __init__(self) -> None:
            self.names: list[str] = []

        def create_event(self, event: dict[str, Any]) -> dict[str, Any]:
            if event["metadata"]["name"] in self.names:
                raise KubeError(409, "AlreadyExists", "exists")
            self.names.append(event["metadata"]["name"])
            assert event["type"] == "Warning" and event["reason"] == "EvictedIfNodeNotReady"
            assert "300s" in event["message"]
            return event

    kube = FakeKube()
    notice = EvictionNotice(kube, "vk-0")  # type: ignore[arg-type]
    toleration = {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute", "tolerationSeconds": 300}
    pod = {
        "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
        "spec": {"tolerations": [toleration]},
    }
    notice(pod)
    notice(pod)  # a relist: the same event name, a conflict, no error
    notice(
        {
            "metadata": {"name": "calm", "uid": "u2"},
            "spec": {"tolerations": [{**toleration, "tolerationSeconds": None}]},
        }
    )
    assert kube.names == ["web.eviction.u1"]
