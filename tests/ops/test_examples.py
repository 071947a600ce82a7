"""The example pods (``vkec2/examples/pods/``, run by ``vkec2 up``): they parse in standalone mode (ConfigMaps
and Secrets are data, not pods), the local fleet's node satisfies their nodeSelectors, and they tolerate the
NotReady/unreachable taints forever."""

from __future__ import annotations

from pathlib import Path

import pytest

from producer.node import NodeConfig, labels
from producer.standalone import parse_manifest, selector_mismatch
from vkec2.cli.localfleet import _config, _pod_names
from vkec2.config import Settings
from vkec2.domain.citizen import eviction_after

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((ROOT / "vkec2" / "examples" / "pods").glob("*.yaml"))


def local_node_labels() -> dict[str, str]:
    raw = _config("demo", "redis://127.0.0.1:6379/0", "http://127.0.0.1:5000", "127.0.0.1:7443")
    settings = Settings.model_validate(raw)
    return labels(NodeConfig.of(settings, name=str(raw["node"]["name"])))


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.name)
def test_the_local_node_satisfies_every_example_pod(manifest: Path) -> None:
    node = local_node_labels()
    assert node["kubernetes.io/arch"] == "amd64" and node["type"] == "virtual-kubelet"
    pods = parse_manifest(manifest.name, manifest.read_text(), "vkec2-local")
    assert {p["metadata"]["name"] for p in pods} == _pod_names(manifest)
    for pod in pods:
        assert pod["spec"].get("nodeSelector"), f"{pod['metadata']['name']} selects no node"
        assert selector_mismatch(pod, node) == {}
        assert eviction_after(pod) is None  # tolerated forever: a fleet outage evicts nothing
        keys = {t.get("key") for t in pod["spec"]["tolerations"]}
        assert {"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"} <= keys


def test_configmaps_and_secrets_are_skipped_not_errors() -> None:
    for name in ("report-settings.yaml", "report-credentials.yaml"):
        text = (ROOT / "vkec2" / "examples" / "pods" / name).read_text()
        assert (
            parse_manifest(name, text, "vkec2-local") == []
            and _pod_names(ROOT / "vkec2" / "examples" / "pods" / name) == set()
        )
    assert selector_mismatch(
        {"spec": {"nodeSelector": {"kubernetes.io/arch": "arm64"}}}, local_node_labels()
    ) == {"kubernetes.io/arch": "arm64"}
