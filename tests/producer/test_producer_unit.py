"""Unit tests of the producer's pure parts: node object and capacity, manifests, command line, deletion."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from producer.deletion import Deleter
from producer.kube import Kube
from producer.lease import HealthProbe, Heartbeat, LeaseKeeper
from producer.main import main
from producer.node import (
    FleetSignals,
    Health,
    NodeConfig,
    NodeKeeper,
    adopt,
    allocatable,
    capacity,
    conditions,
    node_object,
)
from producer.options import default_node_name, parse_args
from producer.pods import PodSync, what_matters
from producer.standalone import ManifestError, parse_manifest, pod_uid
from vkec2.contract import BEAT_MISSING, REMEDIATION_PAUSED
from vkec2.domain.beat import BeatSignals, beat_liveness
from vkec2.domain.breaker import BreakerState
from vkec2.domain.models import Phase, PodRecord
from vkec2.store.redis_store import Store

CFG = NodeConfig(
    name="vk-0", cluster="prod", os="darwin", internal_ip="10.1.2.3", cpu="8", memory="16Gi", pods="10"
)


def test_node_object_labels_taint_and_provider_id() -> None:
    node = node_object(CFG)
    labels = node["metadata"]["labels"]
    assert labels["type"] == "virtual-kubelet" and labels["kubernetes.io/os"] == "darwin"
    assert labels["kubernetes.io/role"] == "agent"
    assert labels["node.kubernetes.io/exclude-from-external-load-balancers"] == "true"
    assert node["spec"]["taints"] == [
        {"key": "virtual-kubelet.io/provider", "value": "vkec2", "effect": "NoSchedule"}
    ]
    assert node["spec"]["providerID"] == "vkec2://prod/vk-0"


def test_adopting_keeps_other_labels_and_taints() -> None:
    existing = {
        "metadata": {"name": "vk-0", "labels": {"team": "a", "type": "old"}},
        "spec": {
            "taints": [
                {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"},
                {"key": "virtual-kubelet.io/provider", "value": "x", "effect": "NoSchedule"},
            ]
        },
    }
    node = adopt(existing, CFG)
    assert (
        node["metadata"]["labels"]["team"] == "a" and node["metadata"]["labels"]["type"] == "virtual-kubelet"
    )
    assert node["spec"]["taints"] == [
        {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"},
        {"key": "virtual-kubelet.io/provider", "value": "vkec2", "effect": "NoSchedule"},
    ]
    taints: list[dict[str, str]] = existing["spec"]["taints"]  # type: ignore[index]
    assert taints[1]["value"] == "x", "the input is not modified"


def test_capacity_prefers_the_quota_hash_and_allocatable_is_capacity() -> None:
    assert capacity({}, CFG) == {"cpu": "8", "memory": "16Gi", "pods": "10"}
    assert capacity({"cpu": "64", "pods": "bogus!", "source": "quotas"}, CFG) == {
        "cpu": "64",
        "memory": "16Gi",
        "pods": "10",
    }
    # Allocatable is capacity: the scheduler subtracts the pods bound to the node itself.
    cap = {"cpu": "8", "memory": "16Gi", "pods": "10"}
    assert allocatable(cap) == cap


def test_a_quota_refusal_is_a_node_condition_before_ready() -> None:
    ok = Health(True, "KubeletReady", "")
    clear = conditions(ok)
    assert [c["type"] for c in clear][-2:] == ["vkec2.io/QuotaExceeded", "Ready"]
    assert clear[-2]["status"] == "False"
    refused = conditions(ok, {"mac2.metal": {"code": "VcpuLimitExceeded", "message": "vCPU limit of 96"}})
    quota = refused[-2]
    assert (quota["status"], quota["reason"]) == ("True", "VcpuLimitExceeded")
    assert "mac2.metal" in quota["message"] and "vCPU limit of 96" in quota["message"]
    assert refused[-1]["type"] == "Ready" and refused[-1]["status"] == "True"


def test_node_conditions_name_what_is_missing() -> None:
    conds = {c["type"]: c for c in conditions(Health(False, "NoWorkers", "no worker answered"))}
    assert conds["Ready"] == {
        "type": "Ready",
        "status": "False",
        "reason": "NoWorkers",
        "message": "no worker answered",
    }
    assert {
        conds[k]["status"] for k in ("MemoryPressure", "DiskPressure", "PIDPressure", "NetworkUnavailable")
    } == {"False"}


def test_only_vkec2_annotations_and_labels_matter() -> None:
    pod = {
        "metadata": {
            "annotations": {
                "compute.amazonaws.com/tags": "{}",
                "other": "x",
                "compute.amazonaws.com/instance-id": "i-1",
            },
            "labels": {"app": "a"},
        }
    }
    assert what_matters(pod) == ({"compute.amazonaws.com/tags": "{}"}, {"app": "a"})


MANIFEST = """\
apiVersion: v1
kind: Pod
metadata: {name: a}
spec: {containers: [{name: c, image: i}]}
---
kind: List
items:
- metadata: {name: b, namespace: ns}
  spec: {containers: [{name: c, image: i}]}
"""


def test_manifest_uids_are_stable_and_follow_path_and_content() -> None:
    pods = parse_manifest("x.yaml", MANIFEST, "vk-0")
    assert [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in pods] == [
        ("default", "a"),
        ("ns", "b"),
    ]
    assert all(p["spec"]["nodeName"] == "vk-0" for p in pods)
    again = parse_manifest("x.yaml", MANIFEST, "vk-0")
    assert [p["metadata"]["uid"] for p in again] == [p["metadata"]["uid"] for p in pods]
    moved = parse_manifest("y.yaml", MANIFEST, "vk-0")
    assert {p["metadata"]["uid"] for p in moved}.isdisjoint(p["metadata"]["uid"] for p in pods)
    edited = parse_manifest("x.yaml", MANIFEST.replace("name: b", "name: b2"), "vk-0")
    assert edited[0]["metadata"]["uid"] == pods[0]["metadata"]["uid"]
    assert edited[1]["metadata"]["uid"] != pods[1]["metadata"]["uid"]
    assert pod_uid("x.yaml", {"a": 1, "b": 2}) == pod_uid("x.yaml", {"b": 2, "a": 1})


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("metadata: [oops", "not valid YAML"),
        ("kind: Deployment\nmetadata: {name: d}\n", "only v1 Pods"),
        ("kind: Pod\nspec: {containers: [{name: c}]}\n", "metadata.name is required"),
        ("kind: Pod\nmetadata: {name: p}\nspec: {}\n", "spec.containers"),
        ("- 1\n", "expected a mapping"),
        (MANIFEST + "---\n" + MANIFEST.split("---")[0], "defined twice"),
    ],
)
def test_bad_manifests_name_the_problem(text: str, problem: str) -> None:
    with pytest.raises(ManifestError, match=problem):
        parse_manifest("bad.yaml", text, "vk-0")


def test_default_node_name_uses_the_statefulset_ordinal() -> None:
    assert default_node_name("Prod_EU", {"HOSTNAME": "vkec2-producer-3"}) == "prod-eu-3"
    assert default_node_name("vkec2", {"POD_NAME": "p-12", "HOSTNAME": "x-1"}) == "vkec2-12"
    assert default_node_name("vkec2", {}) == "vkec2-0"


def test_bad_flags_and_config_give_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--node-name", "Not_A_Name"]) == 2
    assert "--node-name" in capsys.readouterr().err
    assert main(["--manifests", str(tmp_path / "missing")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert main(["--manifests", str(tmp_path), "--kube-host", "http://x"]) == 2
    assert "does not talk to Kubernetes" in capsys.readouterr().err
    assert main(["--lease-interval", "50"]) == 2
    assert "--lease-duration" in capsys.readouterr().err
    assert main(["--lease-interval", "-1"]) == 2
    assert main(["--kubeconfig", "a", "--in-cluster"]) == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("redis_url: http://nope\n")
    assert main(["--config", str(bad), "--manifests", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "invalid configuration" in err and "redis_url" in err
    opts = parse_args(
        ["--node-name", "vk-1", "--node-ip", "10.0.0.1", "--lease-interval", "0.5", "--kubelet-token-webhook"]
    )
    assert opts.node_name == "vk-1" and opts.lease_interval == 0.5 and opts.lease_duration == 40


class _Kube:
    """The one Kubernetes call the deleter makes, recorded."""

    def __init__(self) -> None:
        self.deleted: list[str] = []

    def delete_pod(self, namespace: str, name: str, uid: str, grace_seconds: int = 0) -> bool:
        self.deleted.append(uid)
        return True


class _Link:
    """The producer's fleet link, recorded (what PodSync publishes)."""

    def __init__(self, record: PodRecord) -> None:
        self.node = "vk-0"
        self.store = self
        self.record = record
        self.deletes: list[tuple[str, float | None]] = []

    def get(self, uid: str) -> PodRecord | None:
        return self.record

    def delete(self, uid: str, grace_seconds: float | None = None) -> int:
        self.deletes.append((uid, grace_seconds))
        return 2

    def forget_content(self, uid: str) -> None:
        pass


def _deleting_pod(uid: str, grace: int) -> dict[str, Any]:
    past = "2000-01-01T00:00:00Z"
    meta = {"uid": uid, "name": "p", "namespace": "default", "deletionTimestamp": past}
    return {"metadata": {**meta, "deletionGracePeriodSeconds": grace}, "spec": {}, "status": {}}


@pytest.mark.parametrize("phase", [Phase.PENDING, Phase.RUNNING])
def test_a_deleted_pod_waits_for_terminated_while_the_node_is_ready(phase: Phase) -> None:
    kube = _Kube()
    deleter = Deleter(cast(Any, kube), cast(Any, None), fleet_alive=lambda: True)
    link = _Link(PodRecord(uid="u1", phase=phase))
    PodSync(cast(Any, link), deleter).on_pod(_deleting_pod("u1", 5))

    assert link.deletes == [("u1", 5.0)]  # the delete carries kubectl's --grace-period
    assert deleter.sweep() == [] and kube.deleted == []  # past its grace period, but workers are alive
    deleter.fleet_alive = lambda: False  # the node turns NotReady: the grace period bounds the wait
    assert deleter.sweep() == ["u1"] and kube.deleted == ["u1"]


def test_a_pod_without_a_record_is_removed_at_once() -> None:
    kube = _Kube()
    deleter = Deleter(cast(Any, kube), cast(Any, None), fleet_alive=lambda: True)
    link = _Link(cast(PodRecord, None))
    PodSync(cast(Any, link), deleter).on_pod(_deleting_pod("u2", 30))
    assert kube.deleted == ["u2"] and link.deletes == []


def _signals(*, paused: bool, beat_missing: bool) -> FleetSignals:
    breaker = BreakerState(
        open=paused,
        failure="unreachable" if paused else "",
        scope="worker" if paused else "",
        message="worker w/1 cannot reach the agents: 50 of 50 checks failed" if paused else "",
    )
    beat = beat_liveness(BeatSignals(lock_held=not beat_missing, last_run=1.0), 1000.0, 60.0)
    return breaker, beat


def test_the_remediation_breaker_and_beat_liveness_are_node_conditions_that_leave_ready_alone() -> None:
    ok = Health(True, "KubeletReady", "")
    conds = {c["type"]: c for c in conditions(ok, None, _signals(paused=True, beat_missing=True))}
    paused = conds[REMEDIATION_PAUSED]
    assert (paused["status"], paused["reason"]) == ("True", "WorkerCannotReachAgents")
    assert "cannot reach the agents" in paused["message"]
    beat = conds[BEAT_MISSING]
    assert beat["status"] == "True" and "no periodic task ran for 999s" in beat["message"]
    assert conds["Ready"]["status"] == "True"
    assert conditions(ok, None, _signals(paused=True, beat_missing=True))[-1]["type"] == "Ready"

    calm = {c["type"]: c for c in conditions(ok, None, _signals(paused=False, beat_missing=False))}
    assert (calm[REMEDIATION_PAUSED]["status"], calm[BEAT_MISSING]["status"]) == ("False", "False")


class _NodeKube:
    """Just enough of the Kubernetes API for a heartbeat: a lease and node status patches."""

    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []
        self.lease: dict[str, Any] | None = None

    def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.lease

    def create_lease(self, lease: dict[str, Any]) -> dict[str, Any]:
        self.lease = lease
        return lease

    def replace_lease(self, lease: dict[str, Any]) -> dict[str, Any]:
        self.lease = lease
        return lease

    def patch_node_status(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        self.patches.append(patch)
        return patch


class _Probe:
    def check(self) -> Health:
        return Health(True, "KubeletReady", "")


def test_the_heartbeat_reads_the_breaker_and_beat_from_the_store(redis_url: str) -> None:
    store = Store.from_url(redis_url, "hb-unit")
    kube = cast(Kube, _NodeKube())
    node = NodeKeeper(kube, NodeConfig(name="vk-hb", cluster="hb-unit"))
    beat = Heartbeat(
        cast(HealthProbe, _Probe()), LeaseKeeper(kube, "vk-hb"), node, store, beat_liveness_seconds=60
    )

    def shown() -> dict[str, dict[str, str]]:
        beat.beat()
        patch = cast(_NodeKube, kube).patches[-1]
        return {c["type"]: c for c in patch["status"]["conditions"]}

    first = shown()  # a fresh cluster: no breaker yet, and no beat has ever run
    assert first[REMEDIATION_PAUSED]["status"] == "False" and first[BEAT_MISSING]["status"] == "True"

    store.put_remediation_breaker(BreakerState(open=True, failure="unreachable", scope="agents", message="m"))
    store.record_result("vkec2.health.sweep", {"pods": 0})
    then = shown()
    assert (then[REMEDIATION_PAUSED]["status"], then[REMEDIATION_PAUSED]["reason"]) == (
        "True",
        "AgentsUnreachable",
    )
    assert then[BEAT_MISSING]["status"] == "False" and then["Ready"]["status"] == "True"
    store.close()
